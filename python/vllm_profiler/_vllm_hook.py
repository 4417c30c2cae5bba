"""Zero-code vLLM: every step of vLLM's V1 engine (`vllm/v1/engine/core.py`: `EngineCore.step`,
and `EngineCore.step_with_batch_queue` under pipeline parallelism) becomes a profiler step,
with the scheduled requests as batch size and `SchedulerOutput.total_num_scheduled_tokens` as
token count; and with layer profiling on, the model that `GPUModelRunner.load_model`
(`vllm/v1/worker/gpu_model_runner.py`) loads gets layer hooks.

An import hook waits for those modules, then wraps the methods. The counts are known only
once the scheduler ran inside the step, so the step opens with zeros and the wrapped
`schedule()` of the engine's scheduler sets them. If vLLM's names have moved, one warning goes
to stderr and vLLM runs untouched. Only processes that run the engine record steps.
"""

from __future__ import annotations

import sys
import threading

# This module is imported at start-up in every Python process with VLLM_ENABLE_PROFILING set:
# no `typing`, `functools`, `weakref` or `importlib.abc` until vLLM is imported (annotations
# are strings, PEP 563), and the finder and loader below are duck-typed, as sys.meta_path
# allows.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import importlib.machinery
    from typing import Any, Callable, Dict, Optional

# `_native` (ctypes) and `layers` are imported when vLLM is: this module is imported at start-up
# in every Python process that has VLLM_ENABLE_PROFILING set.

ENGINE_MODULE = "vllm.v1.engine.core"
MODEL_RUNNER_MODULE = "vllm.v1.worker.gpu_model_runner"
ENGINE_STEPS = ("step", "step_with_batch_queue")
_PATCHED = "__vllm_profiler_wrapped__"

_state = threading.local()
_warned = set()
_lib: Optional[Any] = None
# Model runners that loaded a model, so that layer profiling turned on later can reach them
# (a weakref.WeakSet, made when the first one loads).
_runners: Optional[Any] = None


def _warn(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        sys.stderr.write(f"vllm-profiler: {message}\n")


def _library() -> Optional[Any]:
    global _lib
    if _lib is None:
        try:
            from . import _native

            _lib = _native.library()
        except Exception as err:  # noqa: BLE001 - no library: vLLM runs unprofiled
            _warn(f"vLLM steps are not profiled: {err}")
            return None
    return _lib


def _wrap_schedule(scheduler_class: type) -> None:
    import functools

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


def _profiled_step(step: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(step)
    def profiled_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A nested engine step, or one inside a step the user records himself
        # (VLLMPerformanceMonitor.profile_inference_step), is part of the outer step.
        if getattr(_state, "handle", 0) or _user_step_open():
            return step(self, *args, **kwargs)
        lib = _library()
        if lib is None:
            return step(self, *args, **kwargs)
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
    return profiled_step


def patch(module: Any) -> bool:
    """Wraps `module.EngineCore.step` (and `step_with_batch_queue` where it exists); False,
    with one warning, when the names moved."""
    engine = getattr(module, "EngineCore", None)
    if engine is None or not callable(getattr(engine, "step", None)):
        _warn(f"{ENGINE_MODULE}.EngineCore.step not found: vLLM steps are not profiled")
        return False
    for name in ENGINE_STEPS:
        method = getattr(engine, name, None)
        if callable(method) and not getattr(method, _PATCHED, False):
            setattr(engine, name, _profiled_step(method))
    return True


def _user_step_open() -> bool:
    from . import _native

    return _native.user_step_open()


def patch_model_runner(module: Any) -> bool:
    """Wraps `module.GPUModelRunner.load_model` so that a loaded model gets layer hooks when
    layer profiling is on; False, with one warning if layers were asked for, when the names
    moved."""
    import functools

    from . import layers

    runner = getattr(module, "GPUModelRunner", None)
    load_model = getattr(runner, "load_model", None)
    if runner is None or not callable(load_model):
        if layers.auto_attach_wanted():
            _warn(f"{MODEL_RUNNER_MODULE}.GPUModelRunner.load_model not found:"
                  " layers are not profiled")
        return False
    if getattr(load_model, _PATCHED, False):
        return True

    @functools.wraps(load_model)
    def profiled_load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _runners
        result = load_model(self, *args, **kwargs)
        try:
            if _runners is None:
                import weakref

                _runners = weakref.WeakSet()
            _runners.add(self)
            if layers.auto_attach_wanted():
                layers.attach_to_runner(self)
        except Exception as err:  # noqa: BLE001 - never fail vLLM's model load
            _warn(f"could not hook the model's layers ({err}): layers are not profiled")
        return result

    setattr(profiled_load_model, _PATCHED, True)
    runner.load_model = profiled_load_model
    return True


def attach_loaded_runners() -> None:
    """Hooks the layers of every model already loaded (layer profiling turned on late)."""
    from . import layers

    for runner in list(_runners or ()):
        layers.attach_to_runner(runner)


_TARGETS: Dict[str, Callable[[Any], bool]] = {
    ENGINE_MODULE: patch,
    MODEL_RUNNER_MODULE: patch_model_runner,
}


class _Loader:
    """Runs the real loader, then wraps the module's classes."""

    def __init__(self, inner: Any, patcher: Callable[[Any], bool]) -> None:
        self._inner = inner
        self._patcher = patcher

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        try:
            self._patcher(module)
        except Exception as err:  # noqa: BLE001 - never fail vLLM's import
            _warn(f"could not wrap {module.__name__} ({err}): vLLM is not profiled there")


class _Finder:
    """A meta path finder that only answers for the modules it patches."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patcher = _TARGETS.get(fullname)
        if patcher is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, patcher)
                return spec
        return None


def install() -> None:
    """Wraps vLLM's engine and model runner now where they are imported, else when they are."""
    waiting = False
    for name, patcher in _TARGETS.items():
        module = sys.modules.get(name)
        if module is not None:
            patcher(module)
        else:
            waiting = True
    if waiting and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
