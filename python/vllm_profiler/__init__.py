"""vllm_profiler: the vLLM profiling API over libvllm_profiler.so.

Import paths follow the `vllm.profiler` design with `vllm_profiler` in place of `vllm.profiler`:
`vllm_profiler.integration`, `vllm_profiler.vllm_monitor`, `vllm_profiler.gpu_monitor`.

The names below are loaded on first use: the package's start-up hook (`vllm_profiler.pth`)
imports `vllm_profiler._startup` in every Python process, which must stay cheap.
"""

# The crates' version (Cargo.toml's workspace version), which the library's
# vllm_profiler_version() also gives: python/tests/test_install.py holds the three equal.
__version__ = "0.1.0"

# No `typing`, `importlib` or `__future__` at run time here (see above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._native import LibraryNotFoundError, ProfilerError
    from .integration import (
        VLLMProfilingContext,
        disable_vllm_profiling,
        enable_vllm_profiling,
        is_profiling_enabled,
        profile_vllm_function,
    )
    from .schema import CompletedStep, PerformanceSummary
    from .vllm_monitor import VLLMPerformanceMonitor

_EXPORTS = {
    "CompletedStep": ".schema",
    "LibraryNotFoundError": "._native",
    "PerformanceSummary": ".schema",
    "ProfilerError": "._native",
    "VLLMPerformanceMonitor": ".vllm_monitor",
    "VLLMProfilingContext": ".integration",
    "disable_vllm_profiling": ".integration",
    "enable_vllm_profiling": ".integration",
    "is_profiling_enabled": ".integration",
    "profile_vllm_function": ".integration",
}

# Spelled out, not sorted(_EXPORTS): type checkers read it (mypy --strict re-exports only what
# it names). tests/test_api.py holds it to _EXPORTS.
__all__ = [
    "CompletedStep",
    "LibraryNotFoundError",
    "PerformanceSummary",
    "ProfilerError",
    "VLLMPerformanceMonitor",
    "VLLMProfilingContext",
    "__version__",
    "disable_vllm_profiling",
    "enable_vllm_profiling",
    "is_profiling_enabled",
    "profile_vllm_function",
]

# multiprocessing's fork and forkserver children leave with os._exit: give them their final
# reports (cheap; see the module).
from . import _mp_exit  # noqa: E402

_mp_exit.install()


def __getattr__(name: str) -> "Any":
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(_EXPORTS))
