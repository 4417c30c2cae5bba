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

This module patches the engine core and the API server and says which module gets which patch;
`_vllm_worker` patches workers and model runners; `_vllm_patching` holds what they share.
"""

from __future__ import annotations

import os
import sys
import _thread  # not threading: this runs at every Python start-up, and threading imports more

from . import _import_hook
from . import _torch_profiler_hook
from . import _vllm_patching as _p
from . import _vllm_worker
from ._stderr import warn_once as _warn

# Imported at start-up in every Python process with VLLM_ENABLE_PROFILING set: no `typing`,
# `functools`, `weakref` or ctypes until vLLM is imported (annotations are strings).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List

_lock = _thread.allocate_lock()
# Engine steps that scheduled work in this process so far: the next one's number.
_engine_steps = 0


# ---------------------------------------------------------------------------------------------
# Engine core


def _wrap_schedule(scheduler_class: type) -> None:
    import functools

    schedule = getattr(scheduler_class, "schedule", None)
    if schedule is None or getattr(schedule, _p.PATCHED, False):
        return

    @functools.wraps(schedule)
    def profiled_schedule(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _engine_steps
        output = schedule(self, *args, **kwargs)
        handle = getattr(_p.state, "handle", 0)
        if handle:
            try:
                batch, tokens = _p.counts(output)
            except Exception:  # noqa: BLE001 - counts are best effort, the step is not
                _warn("SchedulerOutput has no num_scheduled_tokens/total_num_scheduled_tokens:"
                      " steps are recorded without counts")
                return output
            lib = _p.state.lib
            lib.vllm_profiler_step_set_counts(handle, batch, tokens)
            if tokens > 0:
                _p.state.unflushed = True
                number = _engine_steps
                _engine_steps += 1
                lib.vllm_profiler_step_set_engine_step(handle, number)
                try:
                    setattr(output, _p.ENGINE_STEP_ATTRIBUTE, number)
                except Exception:  # noqa: BLE001 - a slotted output: workers go without it
                    pass
        return output

    setattr(profiled_schedule, _p.PATCHED, True)
    setattr(scheduler_class, "schedule", profiled_schedule)  # noqa: B010 - vLLM's class


def _profiled_step(step: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(step)
    def profiled_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A nested engine step, or one inside a step the user records himself
        # (VLLMPerformanceMonitor.profile_inference_step), is part of the outer step.
        if getattr(_p.state, "handle", 0) or _p.user_step_open():
            return step(self, *args, **kwargs)
        lib = _p.library()
        if lib is None:
            return step(self, *args, **kwargs)
        if _p.role() != "engine_core":
            _p.set_role("engine_core")  # an engine made before profiling was turned on
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            _wrap_schedule(type(scheduler))
        handle = lib.vllm_profiler_step_begin(0, 0)
        _p.state.handle, _p.state.lib = handle, lib
        try:
            return step(self, *args, **kwargs)
        finally:
            _p.state.handle = 0
            if handle:
                lib.vllm_profiler_step_end(handle)
                if getattr(_p.state, "model_step", 0) == handle:
                    _p.state.model_step = 0
                    _p.torch_ops().step_end(lib, handle)
                if getattr(_p.state, "unflushed", False) and _went_idle(self):
                    # The last request is done: vLLM may kill this process at once now (its
                    # server's shutdown does): everything goes to the journal before the
                    # outputs go out.
                    _p.state.unflushed = False
                    lib.vllm_profiler_flush()

    setattr(profiled_step, _p.PATCHED, True)
    return profiled_step


def _went_idle(engine: Any) -> bool:
    """No request left to schedule and no batch in flight."""
    try:
        return not engine.scheduler.has_requests() and not getattr(engine, "batch_queue", None)
    except Exception:  # noqa: BLE001 - an engine without them is never idle to us
        return False


def patch(module: Any) -> bool:
    """Wraps `module.EngineCore`: its steps, its construction (the role) and its shutdown;
    False, with one warning, when the names moved."""
    engine = getattr(module, "EngineCore", None)
    if not isinstance(engine, type) or _p.plain_method(engine, "step") is None:
        _warn(f"{_p.ENGINE_MODULE}.EngineCore.step not found: vLLM steps are not profiled")
        return False
    for name in _p.ENGINE_STEPS:
        _p.wrap(engine, name, _profiled_step)
    _p.wrap(engine, "__init__", _p.after_init("engine_core"))
    proc = getattr(module, "EngineCoreProc", None)
    proc = proc if isinstance(proc, type) else None
    # An EngineCoreProc is the whole process (vLLM's multiprocess engine): its shutdown is
    # the end. An in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) is not.
    _p.wrap(engine, "shutdown",
          _p.export_before_shutdown(lambda self: proc is not None and isinstance(self, proc)))
    _p.library()  # profiling starts with the engine's process, not at its first step
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
            and getattr(spec, "name", None) == _p.API_SERVER_MODULE):
        return True
    argv = list(getattr(sys, "orig_argv", ()))[1:]
    while argv:
        arg = argv.pop(0)
        if arg == "-m":
            return bool(argv[:1] == [_p.API_SERVER_MODULE])
        if arg.startswith("-m"):
            return bool(arg[2:] == _p.API_SERVER_MODULE)
        if arg in ("-X", "-W"):
            argv = argv[1:]  # the option's value
        elif arg == "-c" or not arg.startswith("-"):
            return False  # a command or a script: what follows is its own arguments
    return False


def patch_api_server(module: Any) -> bool:
    """`run_server` (what `vllm serve` and `python -m ...api_server` run) says the role."""
    import functools

    run_server = getattr(module, "run_server", None)
    if not callable(run_server) or getattr(run_server, _p.PATCHED, False):
        return callable(run_server)

    @functools.wraps(run_server)
    def profiled_run_server(*args: Any, **kwargs: Any) -> Any:
        _p.set_role("api_server")
        return run_server(*args, **kwargs)

    setattr(profiled_run_server, _p.PATCHED, True)
    module.run_server = profiled_run_server
    return True


def on_vllm_import(module: Any) -> bool:
    """vLLM is imported: the agent starts now (samples cover model load, the metrics endpoint
    is up before the first request)."""
    if _api_server_main():
        _p.set_role("api_server")
    else:
        _p.library()
    return True


def _rebind_step_fn(engine: Any) -> None:
    """vLLM binds `self.step_fn = self.step` (or `step_with_batch_queue`) when the engine is
    made: an engine made before the hook keeps the unwrapped method there."""
    bound = engine.__dict__.get("step_fn")
    original = getattr(bound, "__func__", None)
    for name in _p.ENGINE_STEPS:
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
        for owner in _vllm_worker.runners():
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

    return _p.wrap(client, "get_output", make)


_TARGETS: Dict[str, Callable[[Any], object]] = {
    _p.VLLM_PACKAGE: on_vllm_import,
    _p.ENGINE_MODULE: patch,
    _p.WORKER_MODULE: _vllm_worker.patch_worker,
    _p.MODEL_RUNNER_MODULE: _vllm_worker.patch_model_runner,
    _p.MODEL_RUNNER_V2_MODULE: _vllm_worker.patch_model_runner,
    _p.API_SERVER_MODULE: patch_api_server,
    _p.CORE_CLIENT_MODULE: patch_core_client,
    _torch_profiler_hook.MODULE: _torch_profiler_hook.patch,
}


def _forget_parent() -> None:
    """In a forked child (vLLM may fork its workers from the engine core): what this process
    is, and its count of engine steps, start anew. The agent resets its side itself."""
    global _engine_steps
    _engine_steps = 0
    _p.forget()
    _vllm_worker.forget()
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
