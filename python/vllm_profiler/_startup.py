"""Run at interpreter start by `vllm_profiler.pth`. Costs one environment lookup; with
VLLM_ENABLE_PROFILING set it installs the import hook that profiles vLLM's engine steps.
It never raises: a failure here would print a traceback in every Python process."""

import os

if os.environ.get("VLLM_ENABLE_PROFILING", "").strip().lower() in ("1", "true", "yes", "on"):
    try:
        from . import _vllm_hook

        _vllm_hook.install()
    except Exception:  # noqa: BLE001 - never break interpreter start-up
        pass
