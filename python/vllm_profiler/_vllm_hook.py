"""Zero-code vLLM: the profiler follows vLLM's V1 engine in whichever of its processes it runs.

- **Engine steps** (`vllm.v1.engine.core`): every `EngineCore.step` (and
  `step_with_batch_queue`, pipeline parallel) becomes a profiler step. Its counts are known
  once the scheduler ran inside it: the wrapped `schedule()` sets the batch size (scheduled
  requests) and tokens (`SchedulerOutput.total_num_scheduled_tokens`), and numbers each step
  that scheduled work (0, 1, ...): that `engine_step` goes into the step and onto the
  scheduler output, which vLLM hands to its workers. A step that scheduled nothing is counted
  apart by the agent (`empty_steps`).
- **Worker steps** (`vllm.v1.worker.gpu_worker.Worker`, which vLLM's CPU and XPU workers
  subclass): in a worker process (multiprocess executor: tensor or pipeline parallel, and
  always on CPU), each `execute_model` (through the `sample_tokens` that follows it) is a
  step with the scheduler output's counts and its `engine_step`, so that layer spans nest in a
  step where the model runs. Inside an engine step of the same thread (one process) it is part
  of that step, never a second one.
- **Layers**: with layer profiling on, the model that `Worker.load_model` loads is hooked
  (and, for other callers, `GPUModelRunner.load_model` of Model Runner V1 and V2). One warning
  when layer profiling is on and the process runs a model it could not hook.
- **Roles**: the process says what it is (`engine_core`, `worker` with its rank,
  `api_server`), so that every report carries it.
- **Start-up**: the agent is loaded as soon as vLLM is imported, so that sampling and the
  metrics endpoint cover model load; the engine core writes its reports when it shuts down
  (vLLM SIGKILLs it soon after), and the crash-safe journal covers any later kill.

If vLLM's names have moved, one warning goes to stderr and vLLM runs untouched.
"""

from __future__ import annotations

import os
import sys
import _thread  # not threading: this runs at every Python start-up, and threading imports more

from . import _import_hook
from . import _torch_profiler_hook
from ._stderr import warn_once as _warn

# Imported at start-up in every Python process with VLLM_ENABLE_PROFILING set: no `typing`,
# `functools`, `weakref` or ctypes until vLLM is imported (annotations are strings).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

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
_PATCHED = "__vllm_profiler_wrapped__"
NO_ENGINE_STEP = 2**64 - 1

_state = _thread._local()
_lib: Optional[Any] = None
_lock = _thread.allocate_lock()
# Model runners and workers that loaded a model, so that layer profiling turned on later can
# reach them (a weakref.WeakSet, made when the first one loads).
_runners: Optional[Any] = None
# Engine steps that scheduled work in this process so far: the next one's number.
_engine_steps = 0
# The strongest role said so far: engine_core > worker > api_server > process.
_ROLE_ORDER = ("process", "api_server", "worker", "engine_core")
_role = "process"
# A model of this process got layer hooks: the per-step check is done for good (a later
# enable rehooks it through `_runners`).
_model_hooked = False


def _library() -> Optional[Any]:
    global _lib
    if _lib is None:
        try:
            from . import _native

            _lib = _native.library()
        except Exception as err:  # noqa: BLE001 - no library: vLLM runs unprofiled
            _warn(f"vLLM is not profiled: {err}")
            return None
    return _lib


def _set_role(role: str, rank: int = -1) -> None:
    """Says the process's role to the agent, unless a stronger one was said."""
    global _role
    if _ROLE_ORDER.index(role) < _ROLE_ORDER.index(_role):
        return
    _role = role
    lib = _library()
    if lib is not None:
        lib.vllm_profiler_set_role(role.encode(), rank if role == "worker" else -1)


def _user_step_open() -> bool:
    from . import _native

    return _native.user_step_open()


# ---------------------------------------------------------------------------------------------
# Engine core


def _counts(output: Any) -> Tuple[int, int]:
    batch = len(output.num_scheduled_tokens)
    tokens = int(output.total_num_scheduled_tokens)
    return min(batch, 0xFFFFFFFF), min(tokens, 0xFFFFFFFF)


def _wrap_schedule(scheduler_class: type) -> None:
    import functools

    schedule = getattr(scheduler_class, "schedule", None)
    if schedule is None or getattr(schedule, _PATCHED, False):
        return

    @functools.wraps(schedule)
    def profiled_schedule(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _engine_steps
        output = schedule(self, *args, **kwargs)
        handle = getattr(_state, "handle", 0)
        if handle:
            try:
                batch, tokens = _counts(output)
            except Exception:  # noqa: BLE001 - counts are best effort, the step is not
                _warn("SchedulerOutput has no num_scheduled_tokens/total_num_scheduled_tokens:"
                      " steps are recorded without counts")
                return output
            lib = _state.lib
            lib.vllm_profiler_step_set_counts(handle, batch, tokens)
            if tokens > 0:
                _state.unflushed = True
                number = _engine_steps
                _engine_steps += 1
                lib.vllm_profiler_step_set_engine_step(handle, number)
                try:
                    setattr(output, ENGINE_STEP_ATTRIBUTE, number)
                except Exception:  # noqa: BLE001 - a slotted output: workers go without it
                    pass
        return output

    setattr(profiled_schedule, _PATCHED, True)
    setattr(scheduler_class, "schedule", profiled_schedule)  # noqa: B010 - vLLM's class


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
        if _role != "engine_core":
            _set_role("engine_core")  # an engine made before profiling was turned on
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
                if getattr(_state, "model_step", 0) == handle:
                    _state.model_step = 0
                    _torch_ops().step_end(lib, handle)
                if getattr(_state, "unflushed", False) and _went_idle(self):
                    # The last request is done: vLLM may kill this process at once now (its
                    # server's shutdown does): everything goes to the journal before the
                    # outputs go out.
                    _state.unflushed = False
                    lib.vllm_profiler_flush()

    setattr(profiled_step, _PATCHED, True)
    return profiled_step


def _torch_ops() -> Any:
    from . import torch_ops

    return torch_ops


def _went_idle(engine: Any) -> bool:
    """No request left to schedule and no batch in flight."""
    try:
        return not engine.scheduler.has_requests() and not getattr(engine, "batch_queue", None)
    except Exception:  # noqa: BLE001 - an engine without them is never idle to us
        return False


def _plain_method(cls: type, name: str) -> Optional[Callable[..., Any]]:
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


def _wrap(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
    """Replaces `cls.name` by `make(original)`, once; False when there is no such plain
    method."""
    method = _plain_method(cls, name)
    if method is None:
        return False
    if not getattr(method, _PATCHED, False):
        wrapped = make(method)
        setattr(wrapped, _PATCHED, True)
        setattr(cls, name, wrapped)
    return True


def _after_init(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper of `__init__` that says the role once the object exists (a worker's rank is
    its `rank`)."""

    def make(init: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(init)
        def profiled_init(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            try:
                rank = getattr(self, "rank", -1) if role == "worker" else -1
                _set_role(role, rank if isinstance(rank, int) else -1)
            except Exception:  # noqa: BLE001 - the role is best effort
                pass

        return profiled_init

    return make


def _export_before_shutdown(
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


def patch(module: Any) -> bool:
    """Wraps `module.EngineCore`: its steps, its construction (the role) and its shutdown;
    False, with one warning, when the names moved."""
    engine = getattr(module, "EngineCore", None)
    if not isinstance(engine, type) or _plain_method(engine, "step") is None:
        _warn(f"{ENGINE_MODULE}.EngineCore.step not found: vLLM steps are not profiled")
        return False
    for name in ENGINE_STEPS:
        _wrap(engine, name, _profiled_step)
    _wrap(engine, "__init__", _after_init("engine_core"))
    proc = getattr(module, "EngineCoreProc", None)
    proc = proc if isinstance(proc, type) else None
    # An EngineCoreProc is the whole process (vLLM's multiprocess engine): its shutdown is
    # the end. An in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) is not.
    _wrap(engine, "shutdown",
          _export_before_shutdown(lambda self: proc is not None and isinstance(self, proc)))
    _library()  # profiling starts with the engine's process, not at its first step
    return True


# ---------------------------------------------------------------------------------------------
# Workers and model runners


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
    handle = getattr(_state, "worker_handle", 0)
    if handle:
        _state.worker_handle = 0
        lib.vllm_profiler_step_end(handle)
        _torch_ops().step_end(lib, handle)
        start = getattr(_state, "worker_gpu_start", None)
        if start is not None:
            _state.worker_gpu_start = None
            try:
                _step_timer.end(handle, start)
            except Exception:  # noqa: BLE001 - the step keeps its host time
                pass


def _worker_step(execute_model: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(execute_model)
    def profiled_execute_model(self: Any, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        # Inside an engine step of this thread (one process): part of that step.
        outer = getattr(_state, "handle", 0)
        if outer or _user_step_open():
            _check_models_hooked(self)
            if outer and getattr(_state, "model_step", 0) != outer:
                # The model runs in this engine step: a step of the torch-op windows.
                _state.model_step = outer
                _torch_ops().step_begin(_state.lib, outer)
            return execute_model(self, scheduler_output, *args, **kwargs)
        lib = _library()
        if lib is None:
            return execute_model(self, scheduler_output, *args, **kwargs)
        if _role == "process":
            _set_role("worker", getattr(self, "rank", -1))  # made before profiling was on
        _check_models_hooked(self)
        _end_worker_step(lib)  # a step whose sample_tokens never came
        try:
            batch, tokens = _counts(scheduler_output)
        except Exception:  # noqa: BLE001 - a step without counts is still a step
            batch, tokens = 0, 0
        handle = lib.vllm_profiler_step_begin(batch, tokens)
        engine_step = getattr(scheduler_output, ENGINE_STEP_ATTRIBUTE, None)
        if handle and isinstance(engine_step, int) and 0 <= engine_step < NO_ENGINE_STEP:
            lib.vllm_profiler_step_set_engine_step(handle, engine_step)
        _state.worker_handle = handle
        if handle and tokens:
            _torch_ops().step_begin(lib, handle)
        timer = _worker_step_timer(lib) if handle else None
        if timer is not None:
            try:
                timer.resolve()  # the steps before, which the GPU has finished
                _state.worker_gpu_start = timer.begin()
            except Exception:  # noqa: BLE001 - the step keeps its host time
                _state.worker_gpu_start = None
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
            if _lib is not None:
                _end_worker_step(_lib)

    return profiled_sample_tokens


def patch_worker(module: Any) -> bool:
    """Wraps `module.Worker` (vLLM's GPU worker, which the CPU and XPU workers subclass): its
    model load (layer hooks), its model execution (worker steps), its construction (role
    and rank) and its shutdown."""
    from . import layers

    worker = getattr(module, "Worker", None)
    if not isinstance(worker, type) or not callable(getattr(worker, "execute_model", None)):
        if layers.auto_attach_wanted():
            _warn(f"{WORKER_MODULE}.Worker not found: layers are not profiled where the model runs")
        return False
    _wrap(worker, "load_model", _after_load)
    _wrap(worker, "execute_model", _worker_step)
    _wrap(worker, "sample_tokens", _worker_sample)
    _wrap(worker, "__init__", _after_init("worker"))
    # A worker process ends with its worker; a worker inside the engine's process does not.
    _wrap(worker, "shutdown", _export_before_shutdown(lambda self: _role == "worker"))
    return True


def patch_model_runner(module: Any) -> bool:
    """Wraps `module.GPUModelRunner.load_model` (Model Runner V1, and V2 in its own module) so
    that a model loaded outside a worker gets layer hooks too."""
    from . import layers

    runner = getattr(module, "GPUModelRunner", None)
    if runner is None or not _wrap(runner, "load_model", _after_load):
        if layers.auto_attach_wanted() and module.__name__ == MODEL_RUNNER_MODULE:
            _warn(f"{MODEL_RUNNER_MODULE}.GPUModelRunner.load_model not found:"
                  " layers are not profiled")
        return False
    return True


# ---------------------------------------------------------------------------------------------
# The API server and the vllm package


def _api_server_main() -> bool:
    """Whether this process runs `python -m vllm.entrypoints.openai.api_server` (its
    `__main__`, not a multiprocessing child that re-imports it as `__mp_main__`). While
    `python -m` imports the module's parent packages (vllm among them) its `__main__` does not
    exist yet: then the command line says it."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if (getattr(main, "__name__", "") == "__main__"
            and getattr(spec, "name", None) == API_SERVER_MODULE):
        return True
    argv = list(getattr(sys, "orig_argv", ()))[1:]
    while argv:
        arg = argv.pop(0)
        if arg == "-m":
            return bool(argv[:1] == [API_SERVER_MODULE])
        if arg.startswith("-m"):
            return bool(arg[2:] == API_SERVER_MODULE)
        if arg in ("-X", "-W"):
            argv = argv[1:]  # the option's value
        elif arg == "-c" or not arg.startswith("-"):
            return False  # a command or a script: what follows is its own arguments
    return False


def patch_api_server(module: Any) -> bool:
    """`run_server` (what `vllm serve` and `python -m ...api_server` run) says the role."""
    import functools

    run_server = getattr(module, "run_server", None)
    if not callable(run_server) or getattr(run_server, _PATCHED, False):
        return callable(run_server)

    @functools.wraps(run_server)
    def profiled_run_server(*args: Any, **kwargs: Any) -> Any:
        _set_role("api_server")
        return run_server(*args, **kwargs)

    setattr(profiled_run_server, _PATCHED, True)
    module.run_server = profiled_run_server
    return True


def on_vllm_import(module: Any) -> bool:
    """vLLM is imported: the agent starts now (samples cover model load, the metrics endpoint
    is up before the first request)."""
    if _api_server_main():
        _set_role("api_server")
    else:
        _library()
    return True


def _rebind_step_fn(engine: Any) -> None:
    """vLLM binds `self.step_fn = self.step` (or `step_with_batch_queue`) when the engine is
    made: an engine made before the hook keeps the unwrapped method there."""
    bound = engine.__dict__.get("step_fn")
    original = getattr(bound, "__func__", None)
    for name in ENGINE_STEPS:
        wrapped = getattr(type(engine), name, None)
        if original is not None and getattr(wrapped, "__wrapped__", None) is original:
            engine.step_fn = getattr(engine, name)


def _unprofiled_engine_children() -> List[int]:
    """Pids of this process's children that run a vLLM engine core (vLLM titles them
    `VLLM::EngineCore`) and were started without VLLM_ENABLE_PROFILING, read from /proc."""
    found: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{os.getpid()}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            try:
                # vLLM's process title (its comm is cut to 15 bytes).
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"EngineCore" not in f.read():
                        continue
                with open(f"/proc/{child}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue
            flags = [v.split(b"=", 1)[1].strip().lower() for v in environ
                     if v.startswith(b"VLLM_ENABLE_PROFILING=")]
            if not any(flag in (b"1", b"true", b"yes", b"on") for flag in flags):
                found.append(int(child))
    return found


def discover_running_engine(hook_layers: bool) -> None:
    """Profiling turned on through the API in a process where vLLM may already run. An
    engine in this process is found at its next step (its role, its `step_fn`, and with
    `hook_layers` its model's layers, which models loaded since the hook are hooked now). An
    engine core in a process of its own, started before, cannot be reached: one warning says
    so."""
    from . import layers

    if hook_layers:
        for owner in list(_runners or ()):
            layers.attach_to_runner(getattr(owner, "model_runner", None) or owner)
    unreached = _unprofiled_engine_children()
    if unreached:
        _warn(f"vLLM's engine core runs in a process of its own (pid {unreached[0]}), started"
              " before profiling was turned on: its steps are not recorded. Turn profiling on"
              " before creating the engine (or start with VLLM_ENABLE_PROFILING=1, or set"
              " VLLM_ENABLE_V1_MULTIPROCESSING=0)")


def patch_core_client(module: Any) -> bool:
    """`InprocClient.get_output` (the in-process engine, VLLM_ENABLE_V1_MULTIPROCESSING=0)
    steps its engine through `engine_core.step_fn`, bound when the engine was made: an engine
    made before profiling was turned on gets it rebound to the wrapped step here, at its next
    step."""
    client = getattr(module, "InprocClient", None)
    if not isinstance(client, type):
        return False

    def make(get_output: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(get_output)
        def profiled_get_output(self: Any, *args: Any, **kwargs: Any) -> Any:
            engine = getattr(self, "engine_core", None)
            if engine is not None:
                _rebind_step_fn(engine)
            return get_output(self, *args, **kwargs)

        return profiled_get_output

    return _wrap(client, "get_output", make)


_TARGETS: Dict[str, Callable[[Any], object]] = {
    VLLM_PACKAGE: on_vllm_import,
    ENGINE_MODULE: patch,
    WORKER_MODULE: patch_worker,
    MODEL_RUNNER_MODULE: patch_model_runner,
    MODEL_RUNNER_V2_MODULE: patch_model_runner,
    API_SERVER_MODULE: patch_api_server,
    CORE_CLIENT_MODULE: patch_core_client,
    _torch_profiler_hook.MODULE: _torch_profiler_hook.patch,
}


def _forget_parent() -> None:
    """In a forked child (vLLM may fork its workers from the engine core): what this process
    is, and its count of engine steps, start anew. The agent resets its side itself."""
    global _role, _engine_steps, _model_hooked
    _role, _engine_steps, _model_hooked = "process", 0, False
    _state.__dict__.clear()
    # A user step open in the parent as it forked is not the child's: its steps are outermost.
    native = sys.modules.get("vllm_profiler._native")
    if native is not None:
        native._user_steps.__dict__.clear()
    if "vllm_profiler.torch_ops" in sys.modules:
        sys.modules["vllm_profiler.torch_ops"].forget()


_fork_hook_installed = False


def install() -> None:
    """Wraps vLLM's classes now where they are imported, else when they are."""
    global _fork_hook_installed
    with _lock:
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_parent)
            _fork_hook_installed = True
        _import_hook.install(_TARGETS, _warn)
