"""The patches of vLLM's workers and model runners (`_vllm_hook` says where they go): a worker
process's steps, with the scheduler output's counts and engine step number, and the layer hooks
of the model it loads.

Imported with `_vllm_hook`, at start-up in profiled processes: nothing but `_vllm_patching`
until vLLM is imported (annotations are strings).
"""

from __future__ import annotations

from . import _vllm_patching as _p
from ._stderr import warn_once as _warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable

# Model runners and workers that loaded a model, so that layer profiling turned on later can
# reach them (a weakref.WeakSet, made when the first one loads).
_runners: Any = None
# A model of this process got layer hooks: the per-step check is done for good (a later
# enable rehooks it through `_runners`).
_model_hooked = False


def runners() -> Iterable[Any]:
    """The workers and runners that loaded a model in this process."""
    return list(_runners or ())


def forget() -> None:
    """In a forked child: its models are its own to check."""
    global _model_hooked
    _model_hooked = False


def _remember(runner: Any) -> None:
    global _runners
    if _runners is None:
        import weakref

        _runners = weakref.WeakSet()
    try:
        _runners.add(runner)
    except TypeError:
        pass


def _hook_layers_of(owner: Any) -> None:
    """Hooks the layers of the model of a worker or runner, if layer profiling is on."""
    from . import layers

    _remember(owner)
    if layers.auto_attach_wanted():
        layers.attach_to_runner(getattr(owner, "model_runner", None) or owner)


def _after_load(load_model: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(load_model)
    def profiled_load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = load_model(self, *args, **kwargs)
        try:
            _hook_layers_of(self)
        except Exception as err:  # noqa: BLE001 - never fail vLLM's model load
            _warn(f"could not hook the model's layers ({err}): layers are not profiled")
        return result

    return profiled_load_model


def _check_models_hooked(worker: Any) -> None:
    """At a model execution with layer profiling on and no model hooked in this process (a
    model loaded before profiling was turned on): hook this worker's now, or say once that it
    cannot be."""
    global _model_hooked
    if _model_hooked:
        return
    from . import layers

    if not layers.auto_attach_wanted():
        return
    if not layers.attached_count():
        try:
            _hook_layers_of(worker)
        except Exception:  # noqa: BLE001 - the warning below says it
            pass
    _model_hooked = bool(layers.attached_count())
    if not _model_hooked:
        _warn(f"layer profiling is on, but no model of {type(worker).__name__} could be"
              " hooked in this process: layers are not profiled")


_STEP_TIMER_UNSET = object()
_step_timer: Any = _STEP_TIMER_UNSET


def _worker_step_timer(lib: Any) -> Any:
    """The DeviceTimer of worker steps (a CUDA event pair per step, see device_time), made at
    the first step; None without CUDA."""
    global _step_timer
    if _step_timer is _STEP_TIMER_UNSET:
        from .device_time import DeviceTimer, cuda_capturing, cuda_event_factory

        factory = cuda_event_factory()
        _step_timer = (
            DeviceTimer(lib.vllm_profiler_step_set_gpu_duration, factory, cuda_capturing())
            if factory
            else None
        )
    return _step_timer


def _end_worker_step(lib: Any) -> None:
    handle = getattr(_p.state, "worker_handle", 0)
    if handle:
        _p.state.worker_handle = 0
        lib.vllm_profiler_step_end(handle)
        _p.torch_ops().step_end(lib, handle)
        start = getattr(_p.state, "worker_gpu_start", None)
        if start is not None:
            _p.state.worker_gpu_start = None
            try:
                _step_timer.end(handle, start)
            except Exception:  # noqa: BLE001 - the step keeps its host time
                pass


def _worker_step(execute_model: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(execute_model)
    def profiled_execute_model(self: Any, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        # Inside an engine step of this thread (one process): part of that step.
        outer = getattr(_p.state, "handle", 0)
        if outer or _p.user_step_open():
            _check_models_hooked(self)
            if outer and getattr(_p.state, "model_step", 0) != outer:
                # The model runs in this engine step: a step of the torch-op windows.
                _p.state.model_step = outer
                _p.torch_ops().step_begin(_p.state.lib, outer)
            return execute_model(self, scheduler_output, *args, **kwargs)
        lib = _p.library()
        if lib is None:
            return execute_model(self, scheduler_output, *args, **kwargs)
        if _p.role() == "process":
            _p.set_role("worker", getattr(self, "rank", -1))  # made before profiling was on
        _check_models_hooked(self)
        _end_worker_step(lib)  # a step whose sample_tokens never came
        try:
            batch, tokens = _p.counts(scheduler_output)
        except Exception:  # noqa: BLE001 - a step without counts is still a step
            batch, tokens = 0, 0
        handle = lib.vllm_profiler_step_begin(batch, tokens)
        engine_step = getattr(scheduler_output, _p.ENGINE_STEP_ATTRIBUTE, None)
        if handle and isinstance(engine_step, int) and 0 <= engine_step < _p.NO_ENGINE_STEP:
            lib.vllm_profiler_step_set_engine_step(handle, engine_step)
        _p.state.worker_handle = handle
        if handle and tokens:
            _p.torch_ops().step_begin(lib, handle)
        timer = _worker_step_timer(lib) if handle else None
        if timer is not None:
            try:
                timer.resolve()  # the steps before, which the GPU has finished
                _p.state.worker_gpu_start = timer.begin()
            except Exception:  # noqa: BLE001 - the step keeps its host time
                _p.state.worker_gpu_start = None
        try:
            output = execute_model(self, scheduler_output, *args, **kwargs)
        except BaseException:
            _end_worker_step(lib)
            raise
        # None: the sampling is deferred to sample_tokens, which ends the step (V1 runners),
        # or there is nothing to sample here (a step that scheduled nothing).
        if output is not None or tokens == 0:
            _end_worker_step(lib)
        return output

    return profiled_execute_model


def _worker_sample(sample_tokens: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(sample_tokens)
    def profiled_sample_tokens(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return sample_tokens(self, *args, **kwargs)
        finally:
            lib = _p.loaded()
            if lib is not None:
                _end_worker_step(lib)

    return profiled_sample_tokens


def patch_worker(module: Any) -> bool:
    """Wraps `module.Worker` (vLLM's GPU worker, which the CPU and XPU workers subclass): its
    model load (layer hooks), its model execution (worker steps), its construction (role
    and rank) and its shutdown."""
    from . import layers

    worker = getattr(module, "Worker", None)
    if not isinstance(worker, type) or not callable(getattr(worker, "execute_model", None)):
        if layers.auto_attach_wanted():
            _warn(f"{_p.WORKER_MODULE}.Worker not found:"
                  " layers are not profiled where the model runs")
        return False
    _p.wrap(worker, "load_model", _after_load)
    _p.wrap(worker, "execute_model", _worker_step)
    _p.wrap(worker, "sample_tokens", _worker_sample)
    _p.wrap(worker, "__init__", _p.after_init("worker"))
    # A worker process ends with its worker; a worker inside the engine's process does not.
    _p.wrap(worker, "shutdown", _p.export_before_shutdown(lambda self: _p.role() == "worker"))
    return True


def patch_model_runner(module: Any) -> bool:
    """Wraps `module.GPUModelRunner.load_model` (Model Runner V1, and V2 in its own module) so
    that a model loaded outside a worker gets layer hooks too."""
    from . import layers

    runner = getattr(module, "GPUModelRunner", None)
    if runner is None or not _p.wrap(runner, "load_model", _after_load):
        if layers.auto_attach_wanted() and module.__name__ == _p.MODEL_RUNNER_MODULE:
            _warn(f"{_p.MODEL_RUNNER_MODULE}.GPUModelRunner.load_model not found:"
                  " layers are not profiled")
        return False
    return True
