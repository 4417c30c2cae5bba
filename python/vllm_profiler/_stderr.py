"""The package's one way to warn: a line on stderr, once per distinct message per process.

Imported at start-up in profiled processes (by `_vllm_hook`): nothing but `sys`."""

import sys

_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        try:
            sys.stderr.write(f"vllm-profiler: {message}\n")
        except Exception:  # noqa: BLE001 - a closed or broken stderr is the host's business
            pass
