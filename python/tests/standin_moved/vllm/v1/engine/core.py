"""A stand-in whose engine no longer has `EngineCore.step` (as if vLLM renamed it)."""


class EngineCore:
    def run_one_step(self) -> int:
        return 42
