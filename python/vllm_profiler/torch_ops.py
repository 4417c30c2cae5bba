"""Torch-op windows: `torch.profiler` for K steps of every N, folded into the agent's reports.

With `VLLM_PROFILING_TORCH_OPS=1` (or `enable_vllm_profiling(enable_torch_op_profiling=True)`)
the steps where the model runs (vLLM's worker steps, an in-process engine's steps, and the steps
of `VLLMPerformanceMonitor.profile_inference_step`) are counted per process, and steps
N-K .. N-1 of every N are profiled by the torch profiler: N is `VLLM_PROFILING_TORCH_OP_EVERY`
(200), K `VLLM_PROFILING_TORCH_OP_STEPS` (5), both read by the agent, which gives the schedule
(`vllm_profiler_torch_op_schedule`). At a window's end its events go to the agent as one
document (`vllm_profiler_torch_op_window`, schema `TorchOpWindowInput` in crates/format):

- per op name: calls, host time (inclusive and self), device time, memory allocated;
- each op execution, for the trace (a track beside its thread);
- on a GPU, the kernels the torch profiler recorded, each with the step that launched it (the
  agent's own kernel tracer steps aside for the window, see `_torch_profiler_hook`).

Each profiled step is marked with a `vllm_profiler::step` record function, which tells the
window's own thread and steps apart; markers are not ops.

The first window pays the torch profiler's one-time start (about 1.5 s on CPU); windows are
off for the process, with one warning, after anything in them fails. Kineto's log lines are
silenced (`KINETO_LOG_LEVEL=6` while the first window starts) unless the host set the variable.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ._stderr import warn_once as _warn

MARKER = "vllm_profiler::step"
# Op executions and kernels one document carries; the rest are counted as dropped.
MAX_EVENTS = 50_000
MAX_KERNELS = 50_000
# The agent's VLLM_PROFILER_MAX_TORCH_OP_WINDOW_LEN.
MAX_DOCUMENT = 16 << 20
_SILENT_KINETO = "6"


class _Window:
    __slots__ = ("profiler", "thread", "handles", "anchors", "marker", "open_handle", "steps",
                 "use_device")

    def __init__(self, steps: int) -> None:
        # Set once the torch profiler started (`_start`); None meanwhile.
        self.profiler: Any = None
        self.thread = threading.get_ident()
        self.handles: List[int] = []
        # The wall clock as each step's marker opened (see `build_document`).
        self.anchors: List[int] = []
        self.marker: Any = None
        self.open_handle = 0
        self.steps = steps
        self.use_device: Optional[str] = None


_window: Optional[_Window] = None
# Outermost model steps counted since the process started profiling windows.
_count = 0
# Set once anything in a window failed: no more windows in this process.
_broken = False
_kineto_quieted = False
# Held while a window starts (the torch profiler's first start takes a second or more): a step
# of another thread meanwhile leaves windows alone.
_start_lock = threading.Lock()
_exit_hook = False
# Windows whose end came from another thread than theirs (a disable, the interpreter's exit,
# the host's profiler starting there), by thread: torch stops a profiler only on the thread
# that started it, so each is stopped at its own thread's next step, and dropped.
_orphans: Dict[int, _Window] = {}


def _fail(err: BaseException) -> None:
    global _broken
    _broken = True
    _drop()
    _warn(f"torch-op windows are off in this process: {type(err).__name__}: {err}")


def _host_profiling() -> bool:
    """Whether a torch profiler runs already (the host's: ours is not running now)."""
    from torch.autograd import profiler

    return bool(getattr(profiler, "_is_profiler_enabled", False))


def step_begin(lib: Any, handle: int) -> None:
    """An outermost step where the model runs began on this thread (`handle`: its step)."""
    global _count, _window
    if _orphans:
        _stop_orphan()
    if _broken or not handle:
        return
    window = _window
    if window is not None:
        if (window.thread == threading.get_ident() and not window.open_handle
                and window.profiler is not None):
            if not lib.vllm_profiler_torch_op_schedule():
                close(lib)  # windows were turned off: this one ends with the steps it has
                return
            _count += 1
            _open_step(window, handle)
        return
    schedule = lib.vllm_profiler_torch_op_schedule()
    if not schedule:
        return
    every, steps = schedule >> 32, schedule & 0xFFFFFFFF
    position = _count % every
    _count += 1
    if position != every - steps or not _start_lock.acquire(blocking=False):
        return
    try:
        if _window is not None or _host_profiling():
            return  # another thread's window, or the host's own profiler: this one is skipped
        window = _window = _Window(steps)
        _start(window)
        _open_step(window, handle)
    except Exception as err:  # noqa: BLE001 - the host's step runs whatever happens here
        _fail(err)
    finally:
        _start_lock.release()


def step_end(lib: Any, handle: int) -> None:
    """The step `handle` ended: its window ends after its K-th step, or now if windows were
    turned off meanwhile."""
    if _orphans:
        _stop_orphan()
    window = _window
    if window is None or window.open_handle != handle or not handle:
        return
    try:
        _end_step(window)
        if len(window.handles) >= window.steps or not lib.vllm_profiler_torch_op_schedule():
            _finish(lib, window)
    except Exception as err:  # noqa: BLE001
        _fail(err)


def _end_step(window: _Window) -> None:
    """Closes the marker of the window's open step, if this thread opened it."""
    if window.marker is not None and window.thread == threading.get_ident():
        window.marker.__exit__(None, None, None)
    window.marker, window.open_handle = None, 0


def _open_step(window: _Window, handle: int) -> None:
    from torch.autograd.profiler import record_function

    window.marker = record_function(MARKER)
    window.anchors.append(time.time_ns())
    window.marker.__enter__()
    window.open_handle = handle
    window.handles.append(handle)


def _start(window: _Window) -> None:
    global _exit_hook
    import torch
    from torch.autograd import profiler

    # The host's own profilers must find ours in their way (`yield_to_host`), and ours the
    # agent's kernel tracer out of its way: the wrapping of torch's profiler class, which the
    # start-up hook does in a process started with profiling on, is done here in any case.
    from . import _torch_profiler_hook

    _torch_profiler_hook.patch(profiler)
    use_device = "cuda" if torch.cuda.is_available() else None
    prof = profiler.profile(use_device=use_device, profile_memory=True, record_shapes=False,
                            with_stack=False)
    if not _exit_hook:
        # torch crashes the process at exit when a profiler still runs: ours never does.
        import atexit

        atexit.register(_at_exit)
        _exit_hook = True
    _quiet_kineto(lambda: prof.__enter__())
    window.profiler, window.use_device = prof, use_device


def _at_exit() -> None:
    from . import _native

    lib = _native._library
    if lib is not None:
        close(lib)
    else:
        _drop()


def _drop() -> None:
    """Stops the window in progress and keeps nothing of it (on another thread than its own,
    it stops at its own thread's next step)."""
    global _window
    window, _window = _window, None
    if window is None or window.profiler is None:
        return
    if window.thread != threading.get_ident():
        # What torch can stop from here, it does (its profiler left as it is crashes the
        # interpreter's exit); the rest on the window's thread, at its next step.
        _orphans[window.thread] = window
    _stop(window)


def _stop(window: _Window) -> None:
    """Stops the window's profiler (its step marker only on its own thread)."""
    try:
        _end_step(window)
        window.profiler.__exit__(None, None, None)
    except Exception:  # noqa: BLE001 - the host goes on
        pass


def _stop_orphan() -> None:
    window = _orphans.pop(threading.get_ident(), None)
    if window is not None:
        try:
            _end_step(window)
            from torch.autograd.profiler import _disable_profiler

            _disable_profiler()  # this thread's share of a profiler stopped elsewhere
        except Exception:  # noqa: BLE001
            pass


def yield_to_host(profile: Any) -> None:
    """A torch profiler is about to start (`_torch_profiler_hook`): one of the host's (vLLM's
    `/start_profile`, a user's) is not ours, and torch runs one at a time, so ours stops and is
    dropped, and no window starts while the host's runs."""
    window = _window
    if window is None or window.profiler is None or window.profiler is profile:
        return
    _drop()
    _warn("the host started a torch profiler during a torch-op window: the window was dropped,"
          " and none starts while a profiler of the host runs")


def _quiet_kineto(start: Any) -> None:
    """Runs `start` with kineto's log lines silenced, the first time (kineto reads the level
    once), unless the host chose a level itself."""
    global _kineto_quieted
    if _kineto_quieted or "KINETO_LOG_LEVEL" in os.environ:
        _kineto_quieted = True
        start()
        return
    _kineto_quieted = True
    os.environ["KINETO_LOG_LEVEL"] = _SILENT_KINETO
    try:
        start()
    finally:
        os.environ.pop("KINETO_LOG_LEVEL", None)


def _finish(lib: Any, window: _Window) -> None:
    global _window
    _window = None
    window.profiler.__exit__(None, None, None)
    document = build_document(raw_events(window.profiler), window.handles,
                              window.use_device is not None, window.anchors)
    code = send(lib, document)
    if code != 0 and code != -1:  # -1: profiling was turned off meanwhile
        from . import _native

        _warn(f"a torch-op window was refused: {_native.last_error()} (code {code})")


def send(lib: Any, document: Dict[str, Any]) -> int:
    """Hands a document of `build_document` to the agent, adding its `now_ns`: read last, just
    before the call, since the agent places every time relative to it."""
    data = json.dumps(document, separators=(",", ":")).encode()
    if len(data) > MAX_DOCUMENT:
        document["dropped_events"] += len(document["events"]) + len(document["kernels"])
        document["events"], document["kernels"] = [], []
        data = json.dumps(document, separators=(",", ":")).encode()
    now = max(time.time_ns(), document["end_ns"])
    data = b"%s,\"now_ns\":%d}" % (data[:-1], now)
    return int(lib.vllm_profiler_torch_op_window(data, len(data)))


# Kinds of raw events (see `raw_events`).
OP, KERNEL, MEMORY, DEVICE_MEMORY = 0, 1, 2, 3
# (kind, name, start_ns, duration_ns, thread, bytes, device, stream, correlation,
# linked_correlation)
Row = Tuple[int, str, int, int, int, int, int, int, int, int]


def raw_events(prof: Any) -> List[Row]:
    """The events of a stopped `torch.autograd.profiler.profile`, read straight from kineto's
    results: `(kind, name, start_ns, duration_ns, thread, bytes, device, stream, correlation,
    linked_correlation)`. Not through `prof.function_events`, whose Python parsing costs about
    70 us an event (a window of a small model: 1000 events, 70 ms); this costs a few."""
    from torch.autograd import DeviceType

    cpu = DeviceType.CPU
    rows: List[Row] = []
    append = rows.append
    for e in prof.kineto_results.events():
        name = e.name()
        if name == "[memory]":
            kind = MEMORY if e.device_type() == cpu else DEVICE_MEMORY
            append((kind, name, e.start_ns(), 0, e.start_thread_id(), e.nbytes(), 0, 0, 0, 0))
        elif e.device_type() == cpu:
            append((OP, name, e.start_ns(), e.duration_ns(), e.start_thread_id(), 0, 0, 0,
                    e.correlation_id(), 0))
        else:
            append((KERNEL, name, e.start_ns(), e.duration_ns(), 0, 0, e.device_index(),
                    e.device_resource_id(), 0, e.linked_correlation_id()))
    return rows


def build_document(rows: List[Row], handles: List[int], device: bool,
                   anchors: Optional[List[int]] = None) -> Dict[str, Any]:
    """The agent's window document of a window's `raw_events`, but for its `now_ns` (`send`).

    Self host time is an op's time less its children's (ops nested in it on its thread); a
    memory event counts for the innermost op open on its thread; a kernel's device time for
    the host event it was launched from (by correlation id: a runtime call, whose enclosing ops
    count it in their device time, not their self device time).

    The torch profiler's timestamps come from an approximate clock (the TSC, scaled by a rate
    measured at its start), which on some machines is a millisecond off the wall clock and runs
    at a slightly different rate. So each event is placed relative to the marker of its step,
    whose wall-clock opening (`anchors`, one per step) was read just before it; without anchors
    (or before the first marker), where the torch profiler put it."""
    markers = sorted((r for r in rows if r[0] == OP and r[1] == MARKER), key=lambda r: r[2])
    own_thread = markers[0][4] if markers else None
    starts = [m[2] for m in markers]
    anchors = list(anchors or ())[: len(starts)]

    def wall(ns: int) -> int:
        i = bisect.bisect_right(starts, ns) - 1
        return anchors[i] + (ns - starts[i]) if 0 <= i < len(anchors) else ns

    # Per op execution: [name, start, duration, children's time, self bytes, self device
    # bytes, own device time, device time with children's, thread, enclosing op or -1]
    ops: List[List[Any]] = []
    by_correlation: Dict[int, int] = {}
    per_thread: Dict[int, List[Row]] = {}
    kernel_rows: List[Row] = []
    for r in rows:
        kind = r[0]
        if kind == KERNEL:
            kernel_rows.append(r)
        elif kind == OP and r[1] == MARKER:
            continue
        else:
            per_thread.setdefault(r[4], []).append(r)
    for thread_rows in per_thread.values():
        # Outer first: by start, then the longer; a memory event after an op that starts with it.
        thread_rows.sort(key=lambda r: (r[2], r[0] != OP, -r[3]))
        stack: List[Tuple[int, int]] = []  # the open ops: (end, index in ops)
        for r in thread_rows:
            kind, start = r[0], r[2]
            # An op ending where the next starts is closed for an op, still open for memory
            # (an op's output freed as it returns).
            while stack and (stack[-1][0] < start or (kind == OP and stack[-1][0] == start)):
                stack.pop()
            parent = stack[-1][1] if stack else -1
            if kind == OP:
                index = len(ops)
                ops.append([r[1], start, r[3], 0, 0, 0, 0, 0, r[4], parent])
                if parent >= 0:
                    ops[parent][3] += r[3]
                stack.append((start + r[3], index))
                if r[8]:
                    by_correlation[r[8]] = index
            elif parent >= 0:
                ops[parent][4 if kind == MEMORY else 5] += r[5]
    kernels: List[Dict[str, Any]] = []
    dropped = 0
    for r in kernel_rows:
        launcher = by_correlation.get(r[9])
        if launcher is not None:
            ops[launcher][6] += r[3]
            index = launcher
            while index >= 0:
                ops[index][7] += r[3]
                index = ops[index][9]
        if len(kernels) < MAX_KERNELS:
            step = bisect.bisect_right(starts, r[2]) - 1
            kernels.append({"name": r[1], "device": max(int(r[6]), 0),
                            "stream": max(int(r[7]), 0), "start_ns": wall(r[2]),
                            "duration_ns": max(int(r[3]), 0),
                            "step": step if step >= 0 else None})
        else:
            dropped += 1
    figures: Dict[str, List[int]] = {}
    trace: List[Dict[str, Any]] = []
    for op in ops:
        name, start, duration = op[0], op[1], max(int(op[2]), 0)
        f = figures.get(name)
        if f is None:
            f = figures[name] = [0, 0, 0, 0, 0, 0, 0]
        f[0] += 1
        f[1] += duration
        f[2] += max(duration - op[3], 0)
        f[3] += op[7]
        f[4] += op[6]
        f[5] += op[4]
        f[6] += op[5]
        if len(trace) < MAX_EVENTS:
            thread = op[8]
            trace.append({"name": name, "thread": 0 if thread == own_thread else
                          max(int(thread), 1), "start_ns": wall(start),
                          "duration_ns": duration})
        else:
            dropped += 1
    op_list = [{
        "name": name, "calls": f[0], "host_ns": f[1], "self_host_ns": min(f[2], f[1]),
        "device_ns": f[3] if device else None, "self_device_ns": f[4] if device else None,
        "self_cpu_memory_bytes": f[5], "self_device_memory_bytes": f[6] if device else None,
    } for name, f in figures.items()]
    if markers:
        start_ns = wall(markers[0][2])
        end_ns = max(wall(m[2]) + m[3] for m in markers)
    else:
        start_ns = min((r[2] for r in rows), default=time.time_ns())
        end_ns = max((r[2] + r[3] for r in rows), default=start_ns)
    return {"start_ns": start_ns, "end_ns": end_ns,
            "steps": list(handles), "ops": op_list, "events": trace, "kernels": kernels,
            "dropped_events": dropped}


def close(lib: Any) -> None:
    """Profiling ends here (disable, a shutdown's export, the interpreter's exit): the window in
    progress on this thread ends now with the steps it has (a step still open is ended first).
    One on another thread is dropped: torch stops a profiler only on its own thread, which
    does so at its next step."""
    window = _window
    if window is None or window.profiler is None:
        return
    if window.thread != threading.get_ident():
        _drop()
        return
    try:
        _end_step(window)
        _finish(lib, window)
    except Exception as err:  # noqa: BLE001
        _fail(err)


def forget() -> None:
    """In a forked child: the parent's window is not this process's. Forked on the window's
    thread, the child's copy of that thread runs the parent's torch profiler: it is stopped
    here, its events dropped. Forked on another thread, the child has only torch's flag that a
    profiler runs, which it clears (the profiler's thread is not in the child)."""
    global _window, _count, _broken
    window = _window
    _window, _count, _broken = None, 0, False
    _orphans.clear()
    if window is None or window.profiler is None:
        return
    if window.thread == threading.get_ident():
        _stop(window)
    else:
        from torch.autograd import profiler

        profiler._is_profiler_enabled = False
