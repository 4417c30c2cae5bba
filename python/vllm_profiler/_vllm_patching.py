"""What the vLLM patches share: the names they look for, the thread's open engine step, the
agent once loaded, the process's role, and the way a method gets wrapped (once, and only a
plain function). `_vllm_hook` patches the engine core and says which module gets which
patch; `_vllm_worker` patches workers and model runners.

Imported at start-up in every Python process with VLLM_ENABLE_PROFILING set: nothing but `sys`
and `_thread` until vLLM is imported (annotations are strings).
"""

from __future__ import annotations

import sys
import _thread

from ._stderr import warn_once as _warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Tuple

VLLM_PACKAGE = "vllm"
ENGINE_MODULE = "vllm.v1.engine.core"
WORKER_MODULE = "vllm.v1.worker.gpu_worker"
MODEL_RUNNER_MODULE = "vllm.v1.worker.gpu_model_runner"
MODEL_RUNNER_V2_MODULE = "vllm.v1.worker.gpu.model_runner"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CORE_CLIENT_MODULE = "vllm.v1.engine.core_client"
ENGINE_STEPS = ("step", "step_with_batch_queue")
# Set on the scheduler output: the engine's number of the step that scheduled it.
ENGINE_STEP_ATTRIBUTE = "vllm_profiler_engine_step"
PATCHED = "__vllm_profiler_wrapped__"
NO_ENGINE_STEP = 2**64 - 1

# This thread's open engine step (`handle`, `lib`), worker step and torch-op window marks.
state = _thread._local()
_lib: Optional[Any] = None
# The strongest role said so far: engine_core > worker > api_server > process.
_ROLE_ORDER = ("process", "api_server", "worker", "engine_core")
_role = "process"


def library() -> Optional[Any]:
    """The agent, loaded at the first call; None, with one warning, where it cannot be."""
    global _lib
    if _lib is None:
        try:
            from . import _native

            _lib = _native.library()
        except Exception as err:  # noqa: BLE001 - no library: vLLM runs unprofiled
            _warn(f"vLLM is not profiled: {err}")
            return None
    return _lib


def loaded() -> Optional[Any]:
    """The agent if a patch loaded it already; never loads it."""
    return _lib


def role() -> str:
    return _role


def set_role(new: str, rank: int = -1) -> None:
    """Says the process's role to the agent, unless a stronger one was said."""
    global _role
    if _ROLE_ORDER.index(new) < _ROLE_ORDER.index(_role):
        return
    _role = new
    lib = library()
    if lib is not None:
        lib.vllm_profiler_set_role(new.encode(), rank if new == "worker" else -1)


def forget() -> None:
    """In a forked child: its role starts anew, with no step open."""
    global _role
    _role = "process"
    state.__dict__.clear()


def user_step_open() -> bool:
    from . import _native

    return _native.user_step_open()


def counts(output: Any) -> Tuple[int, int]:
    batch = len(output.num_scheduled_tokens)
    tokens = int(output.total_num_scheduled_tokens)
    return min(batch, 0xFFFFFFFF), min(tokens, 0xFFFFFFFF)


def torch_ops() -> Any:
    from . import torch_ops

    return torch_ops


def plain_method(cls: type, name: str) -> Optional[Callable[..., Any]]:
    """`cls.name` when it is a plain function (its own or inherited, not `object`'s, not a
    static or class method): only those are wrapped, since the wrappers pass `self` on."""
    import inspect

    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    if isinstance(raw, (staticmethod, classmethod)) or getattr(object, name, None) is raw:
        return None
    return raw if inspect.isfunction(raw) else None


def wrap(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
    """Replaces `cls.name` by `make(original)`, once; False when there is no such plain
    method."""
    method = plain_method(cls, name)
    if method is None:
        return False
    if not getattr(method, PATCHED, False):
        wrapped = make(method)
        setattr(wrapped, PATCHED, True)
        setattr(cls, name, wrapped)
    return True


def after_init(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper of `__init__` that says the role once the object exists (a worker's rank is
    its `rank`)."""

    def make(init: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(init)
        def profiled_init(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            try:
                rank = getattr(self, "rank", -1) if role == "worker" else -1
                set_role(role, rank if isinstance(rank, int) else -1)
            except Exception:  # noqa: BLE001 - the role is best effort
                pass

        return profiled_init

    return make


def export_before_shutdown(
    final: Callable[[Any], bool],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper of `shutdown` that writes the reports first: vLLM kills the process soon
    after, sometimes before its own teardown ends. `final(self)` says whether this is the end
    of the process (the final export, which closes the session) or not (an export)."""

    def make(shutdown: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(shutdown)
        def profiled_shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
            lib = _lib
            if lib is not None:
                try:
                    if "vllm_profiler.torch_ops" in sys.modules:
                        sys.modules["vllm_profiler.torch_ops"].close(lib)
                    if final(self):
                        lib.vllm_profiler_finish()
                    else:
                        lib.vllm_profiler_export(None)
                except Exception:  # noqa: BLE001 - never delay or fail vLLM's shutdown
                    pass
            return shutdown(self, *args, **kwargs)

        return profiled_shutdown

    return make
