"""Makes the agent's kernel tracer step aside for the torch profiler.

CUPTI takes one activity client per process. While the agent traces kernels
(VLLM_PROFILING_KERNELS=1) it holds CUPTI, and `torch.profiler` (vLLM's `/start_profile`
included) would get no kernel records. `torch.autograd.profiler.profile`, which every torch
profiler runs through, is wrapped: the agent releases CUPTI before the profiler prepares its
trace, and takes it back once the profiler has stopped.

Imported at start-up in profiled processes: nothing is imported until torch's profiler is.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MODULE = "torch.autograd.profiler"
_PATCHED = "__vllm_profiler_wrapped__"


def _call(name: str) -> None:
    try:
        from . import _native

        getattr(_native.library(), name)()
    except Exception:  # noqa: BLE001 - the host's profiler must run whatever happens here
        pass


def pause() -> None:
    """Releases CUPTI (a no-op where kernels are not traced)."""
    _call("vllm_profiler_kernels_pause")


def resume() -> None:
    """Takes CUPTI back (a no-op where kernels are not traced)."""
    _call("vllm_profiler_kernels_resume")


def patch(module: Any) -> bool:
    profile = getattr(module, "profile", None)
    if not isinstance(profile, type):
        return False
    prepare = getattr(profile, "_prepare_trace", None)
    leave = getattr(profile, "__exit__", None)
    if prepare is None or leave is None or getattr(prepare, _PATCHED, False):
        return prepare is not None
    import functools

    @functools.wraps(prepare)
    def prepare_after_pause(self: Any, *args: Any, **kwargs: Any) -> Any:
        windows = sys.modules.get("vllm_profiler.torch_ops")
        if windows is not None:
            windows.yield_to_host(self)  # torch runs one profiler at a time: the host's wins
        if getattr(self, "use_cuda", False) or getattr(self, "use_device", None):
            pause()
            self.__vllm_profiler_paused__ = True
        return prepare(self, *args, **kwargs)

    @functools.wraps(leave)
    def exit_then_resume(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return leave(self, *args, **kwargs)
        finally:
            if self.__dict__.pop("__vllm_profiler_paused__", False):
                resume()

    setattr(prepare_after_pause, _PATCHED, True)
    setattr(exit_then_resume, _PATCHED, True)
    setattr(profile, "_prepare_trace", prepare_after_pause)  # noqa: B010 - a class of torch's
    setattr(profile, "__exit__", exit_then_resume)  # noqa: B010
    return True


def wrapped(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, _PATCHED, False))
