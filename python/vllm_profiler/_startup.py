"""Run at interpreter start by `vllm_profiler.pth` where VLLM_ENABLE_PROFILING is set (the .pth
line checks it first, so that other processes import nothing of the package, and skips a
package that is gone): it installs the import hook that profiles vLLM's engine steps. It never
raises: a failure here would print a traceback in every profiled Python process."""

import os

if os.environ.get("VLLM_ENABLE_PROFILING", "").strip().lower() in ("1", "true", "yes", "on"):
    try:
        from . import _vllm_hook

        _vllm_hook.install()
    except Exception:  # noqa: BLE001 - never break interpreter start-up
        pass
