"""Zero-code vLLM: every `EngineCore.step` of vLLM's V1 engine (`vllm/v1/engine/core.py`)
becomes a profiler step, with the scheduled requests as batch size and
`SchedulerOutput.total_num_scheduled_tokens` as token count.

An import hook waits for `vllm.v1.engine.core`, then wraps `EngineCore.step`. The counts are
known only once the scheduler ran inside the step, so the step opens with zeros and the
wrapped `schedule()` of the engine's scheduler sets them. If vLLM's names have moved, one
warning goes to stderr and vLLM runs untouched. Only processes that run the engine record.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Any, Optional

ENGINE_MODULE = "vllm.v1.engine.core"
_PATCHED = "__vllm_profiler_wrapped__"

_state = threading.local()
_warned = set()


def _warn(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        sys.stderr.write(f"vllm-profiler: {message}\n")


def _library() -> Optional[Any]:
    try:
        from . import _native

        return _native.library()
    except Exception as err:  # noqa: BLE001 - no library: vLLM runs unprofiled
        _warn(f"vLLM steps are not profiled: {err}")
        return None


def _wrap_schedule(scheduler_class: type) -> None:
    schedule = getattr(scheduler_class, "schedule", None)
    if schedule is None or getattr(schedule, _PATCHED, False):
        return

    @functools.wraps(schedule)
    def profiled_schedule(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = schedule(self, *args, **kwargs)
        handle = getattr(_state, "handle", 0)
        if handle:
            try:
                batch = len(output.num_scheduled_tokens)
                tokens = int(output.total_num_scheduled_tokens)
                _state.lib.vllm_profiler_step_set_counts(
                    handle, min(batch, 0xFFFFFFFF), min(tokens, 0xFFFFFFFF)
                )
            except Exception:  # noqa: BLE001 - counts are best effort, the step is not
                _warn("SchedulerOutput has no num_scheduled_tokens/total_num_scheduled_tokens:"
                      " steps are recorded without counts")
        return output

    setattr(profiled_schedule, _PATCHED, True)
    scheduler_class.schedule = profiled_schedule


def patch(module: Any) -> bool:
    """Wraps `module.EngineCore.step`; False (with one warning) when the names moved."""
    engine = getattr(module, "EngineCore", None)
    step = getattr(engine, "step", None)
    if engine is None or not callable(step):
        _warn(f"{ENGINE_MODULE}.EngineCore.step not found: vLLM steps are not profiled")
        return False
    if getattr(step, _PATCHED, False):
        return True

    @functools.wraps(step)
    def profiled_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        lib = _library()
        if lib is None or getattr(_state, "handle", 0):
            return step(self, *args, **kwargs)  # unprofiled, or a nested call
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            _wrap_schedule(type(scheduler))
        handle = lib.vllm_profiler_step_begin(0, 0)
        _state.handle, _state.lib = handle, lib
        try:
            return step(self, *args, **kwargs)
        finally:
            _state.handle = 0
            if handle:
                lib.vllm_profiler_step_end(handle)

    setattr(profiled_step, _PATCHED, True)
    engine.step = profiled_step
    return True


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        try:
            patch(module)
        except Exception as err:  # noqa: BLE001 - never fail vLLM's import
            _warn(f"could not wrap EngineCore.step ({err}): vLLM steps are not profiled")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != ENGINE_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Wraps the engine now if vLLM is already imported, else when it is."""
    module = sys.modules.get(ENGINE_MODULE)
    if module is not None:
        patch(module)
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
