"""Scenarios run by test_api.py, one per process: `scenarios.py NAME OUT_DIR [ARGS...]`.
Each prints one JSON line with what the test checks besides the report files."""

import asyncio
import inspect
import json
import logging
import os
import sys
import time

import vllm_profiler
from vllm_profiler.integration import (
    VLLMProfilingContext,
    disable_vllm_profiling,
    enable_vllm_profiling,
    profile_vllm_function,
)
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor


def steps(monitor, n, first=0):
    for i in range(first, first + n):
        with monitor.profile_inference_step(batch_size=i + 1, num_tokens=10 * (i + 1)):
            time.sleep(0.001)


def enable_disable(out):
    enable_vllm_profiling(enable_gpu_monitoring=True, output_dir=out, sample_interval=0.05)
    assert vllm_profiler.is_profiling_enabled()
    steps(VLLMPerformanceMonitor(), 5)
    disable_vllm_profiling()
    assert not vllm_profiler.is_profiling_enabled()
    disable_vllm_profiling()  # a second disable is harmless
    return {}


def context_raises(out):
    monitor = VLLMPerformanceMonitor()
    try:
        with VLLMProfilingContext(output_dir=out):
            steps(monitor, 3)
            raise ValueError("the block failed")
    except ValueError as err:
        return {"error": str(err), "enabled_after": vllm_profiler.is_profiling_enabled()}
    return {"error": None}


def decorator(out):
    monitor = VLLMPerformanceMonitor()

    @profile_vllm_function(output_dir=out)
    def run_inference(n: int, label: str = "x") -> str:
        """Runs n steps."""
        steps(monitor, n)
        return f"{label}:{n}"

    @profile_vllm_function(output_dir=out)
    async def run_async(n: int) -> int:
        """Async steps."""
        steps(monitor, n, first=100)
        await asyncio.sleep(0)
        return n * 2

    return {
        "sync": run_inference(2, label="done"),
        "async": asyncio.run(run_async(3)),
        "names": [run_inference.__name__, run_async.__name__],
        "docs": [run_inference.__doc__, run_async.__doc__],
        "signature": str(inspect.signature(run_inference)),
        "is_coroutine": inspect.iscoroutinefunction(run_async),
    }


def monitor(out):
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    m = VLLMPerformanceMonitor(output_dir=out, sample_interval=0.05)
    seen = []
    m.on_step_completed = seen.append
    m.start_monitoring()
    steps(m, 4)
    raising = VLLMPerformanceMonitor()
    calls = []

    def boom(record):
        calls.append(record["step_id"])
        raise RuntimeError("callback bug")

    raising.on_step_completed = boom
    steps(raising, 3, first=4)
    last_two = m.get_performance_summary(last_n_steps=2)
    everything = m.get_performance_summary()
    report = os.path.join(out, "combined", "report.json")
    m.export_performance_report(report)
    m.stop_monitoring()
    return {
        "seen": seen,
        "boom_calls": calls,
        "last_two_steps": last_two["total_steps"],
        "last_two_tokens": last_two["total_tokens"],
        "all_steps": everything["total_steps"],
        "report": report,
        "report_mode": oct(os.stat(report).st_mode & 0o777),
    }


def env_started(out):
    # VLLM_ENABLE_PROFILING=1 started the profiler before this import; the API applies
    # settings on top and the reports are written at exit.
    was_enabled = vllm_profiler.is_profiling_enabled()
    enable_vllm_profiling(output_dir=out, sample_interval=0.05)
    steps(VLLMPerformanceMonitor(), 6)
    return {"was_enabled": was_enabled}


def _child_steps(n):
    steps(VLLMPerformanceMonitor(), n)


def _quiet_child():
    pass


def mp_children(out, method):
    """Steps in multiprocessing children that leave with os._exit (fork, forkserver) or exit
    normally (spawn); no export interval, so only a final export gives them reports."""
    import multiprocessing

    enable_vllm_profiling(output_dir=out, sample_interval=0.05)
    context = multiprocessing.get_context(method)
    children = []
    for target, args in ((_child_steps, (3,)), (_quiet_child, ())):
        child = context.Process(target=target, args=args)
        child.start()
        child.join()
        assert child.exitcode == 0, child.exitcode
        children.append(child.pid)
    steps(VLLMPerformanceMonitor(), 2)
    disable_vllm_profiling()
    return {"recording_child": children[0], "quiet_child": children[1]}


def bad_setting(out):
    try:
        enable_vllm_profiling(output_dir=out, sample_interval=-1)
    except vllm_profiler.ProfilerError as err:
        return {"code": err.code, "message": err.message, "enabled": vllm_profiler.is_profiling_enabled()}
    return {"code": None}





def gpu(out):
    from vllm_profiler.detector import UnifiedGPUDetector
    from vllm_profiler.gpu_monitor import GPUHardwareMonitor, GPUMonitor, get_gpu_monitor

    before = GPUHardwareMonitor(device_id=1).get_current_metrics() if vllm_profiler.is_profiling_enabled() else "off"
    enable_vllm_profiling(output_dir=out, sample_interval=0.05)
    hw = GPUHardwareMonitor(device_id=1, sample_interval=0.05)
    hw.start()
    deadline = time.time() + 10
    while len(hw.get_metrics_history()) < 3 and time.time() < deadline:
        time.sleep(0.05)
    current = hw.get_current_metrics()
    history = hw.get_metrics_history(duration_sec=60)
    old = hw.get_metrics_history(duration_sec=0)
    detector = UnifiedGPUDetector()
    result = {
        "before": before,
        "current": {k: getattr(current, k) for k in ("device_id", "gpu_utilization", "memory_utilization", "temperature", "power_draw", "memory_used_mb")},
        "history_devices": sorted({m.device_id for m in history}),
        "history_len": len(history),
        "recent_none": len(old),
        "seed000": GPUMonitor(device_index=0).get_metrics(),
        "seed000_missing": GPUMonitor(device_index=5).get_metrics(),
        "singleton": get_gpu_monitor(0) is get_gpu_monitor(0),
        "detector": detector.detector_name,
        "list": detector.get_gpu_list(),
        "info1": detector.get_gpu_info(1),
    }
    disable_vllm_profiling()
    return result



def cpu_detector(out):
    from vllm_profiler.detector import UnifiedGPUDetector
    from vllm_profiler.gpu_monitor import GPUMonitor

    d = UnifiedGPUDetector()
    return {"detector": d.detector_name, "list": d.get_gpu_list(), "seed000": GPUMonitor().get_metrics()}


def vllm_engine(out):
    # What `pip install` does at start-up: process the package's .pth file.
    import site

    site.addsitedir(os.environ["VLLM_PROFILER_PTH_DIR"])
    from vllm.v1.engine.core import EngineCore

    engine = EngineCore(max_num_seqs=3)
    # Three prompts of 5, 7 and 9 tokens, generating 2, 3 and 4 tokens.
    for i, (prompt, max_tokens) in enumerate([(5, 2), (7, 3), (9, 4)]):
        engine.add_request(f"r{i}", [1] * prompt, max_tokens)
    steps = 0
    while engine.scheduler.has_requests():
        engine.step()
        steps += 1
    engine.step()  # an idle step returns before scheduling: recorded with zero counts
    import copy

    loader = sys.modules["vllm.v1.engine.core"].__loader__
    copy.copy(loader)  # code that copies or dispatches on a module's loader sees the real one
    return {"steps": steps + 1, "wrapped_name": EngineCore.step.__name__,
            "loader": type(loader).__name__}


def vllm_batch_queue(out):
    import site

    site.addsitedir(os.environ["VLLM_PROFILER_PTH_DIR"])
    from vllm.v1.engine.core import EngineCore

    # Pipeline parallelism: vLLM binds step_fn to step_with_batch_queue.
    engine = EngineCore(max_num_seqs=3, batch_queue_size=2)
    engine.add_request("r0", [1] * 5, 2)
    engine.add_request("r1", [1] * 7, 3)
    calls = 0
    while engine.scheduler.has_requests() or engine.batch_queue:
        engine.step_fn()
        calls += 1
    return {"calls": calls, "wrapped_name": EngineCore.step_with_batch_queue.__name__}


def _engine_in_child(pth_dir):
    import site

    site.addsitedir(pth_dir)  # what site-packages' .pth files do in an installed package
    from vllm.v1.engine.core import EngineCore

    engine = EngineCore(max_num_seqs=2)
    engine.add_request("r0", [1] * 4, 3)
    engine.add_request("r1", [1] * 6, 2)
    while engine.scheduler.has_requests():
        engine.step()


def vllm_child_process(out):
    """enable_vllm_profiling in the parent; vLLM's engine runs in a spawned process."""
    import multiprocessing

    enable_vllm_profiling(output_dir=out, sample_interval=0.05)
    child = multiprocessing.get_context("spawn").Process(
        target=_engine_in_child, args=(os.environ["VLLM_PROFILER_PTH_DIR"],)
    )
    child.start()
    child.join(60)
    disable_vllm_profiling()
    # A process started after disable is not profiled.
    late = multiprocessing.get_context("spawn").Process(
        target=_engine_in_child, args=(os.environ["VLLM_PROFILER_PTH_DIR"],)
    )
    late.start()
    late.join(60)
    return {
        "child": child.pid,
        "child_exit": child.exitcode,
        "late": late.pid,
        "late_exit": late.exitcode,
        "env_after": os.environ.get("VLLM_ENABLE_PROFILING"),
    }


class _NaiveDelegatingFinder:
    """Another package's finder that, like ours, asks the rest of sys.meta_path for the spec
    of the modules it patches, and has no guard of its own: without the package's guard the
    two would ask each other for ever (RecursionError)."""

    def __init__(self):
        self.asked = 0

    def find_spec(self, fullname, path, target=None):
        if fullname != "vllm.v1.engine.core":
            return None
        self.asked += 1
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def vllm_with_another_finder(out):
    import site

    naive = _NaiveDelegatingFinder()
    sys.meta_path.insert(0, naive)
    site.addsitedir(os.environ["VLLM_PROFILER_PTH_DIR"])  # ours goes first now
    sys.meta_path.remove(naive)
    sys.meta_path.insert(0, naive)  # and theirs in front of it: each delegates to the other
    from vllm.v1.engine.core import EngineCore

    engine = EngineCore(max_num_seqs=2)
    engine.add_request("r0", [1] * 4, 2)
    while engine.scheduler.has_requests():
        engine.step()
    return {"asked": naive.asked, "patched": getattr(EngineCore.step, "__vllm_profiler_wrapped__", False)}


def vllm_unhookable_worker(out):
    import site

    site.addsitedir(os.environ["VLLM_PROFILER_PTH_DIR"])
    from vllm.v1.worker.gpu_worker import SchedulerOutput, Worker

    worker = Worker(rank=3)
    worker.load_model()
    for i in range(3):
        worker.execute_model(SchedulerOutput({"r0": 4 - i}, 4 - i))
    return {}


def vllm_moved(out):
    import site

    site.addsitedir(os.environ["VLLM_PROFILER_PTH_DIR"])
    from vllm.v1.engine.core import EngineCore

    return {"value": EngineCore().run_one_step()}


def layers(out):
    import torch
    from torch import nn

    from vllm_profiler.layers import LayerProfiler

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(8, 8)
            self.o_proj = nn.Linear(8, 8)

        def forward(self, x):
            return self.o_proj(torch.softmax(self.q_proj(x), dim=-1))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.up_proj = nn.Linear(8, 16)
            self.down_proj = nn.Linear(16, 8)

        def forward(self, x):
            return self.down_proj(torch.relu(self.up_proj(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attention()
            self.mlp = MLP()

        def forward(self, x):
            return x + self.mlp(x + self.self_attn(x))

    class TinyModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(32, 8)
            self.layers = nn.ModuleList([Block(), Block()])
            self.norm = nn.LayerNorm(8)

        def forward(self, ids):
            x = self.embed_tokens(ids)
            for layer in self.layers:
                x = layer(x)
            return self.norm(x)

    torch.manual_seed(0)
    model = TinyModel().eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = model(ids)
    enable_vllm_profiling(output_dir=out, enable_layer_profiling=True)
    monitor = VLLMPerformanceMonitor()
    full = LayerProfiler(model).attach()
    with torch.no_grad():
        for _ in range(3):
            with monitor.profile_inference_step(batch_size=1, num_tokens=4):
                got = model(ids)
    full.detach()
    shallow = LayerProfiler(model, max_depth=2, exclude=["model.norm"]).attach()
    with torch.no_grad(), monitor.profile_inference_step(batch_size=1, num_tokens=4):
        model(ids)
    shallow_hooked = list(shallow.hooked)
    shallow.detach()
    hooks_left = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )
    disable_vllm_profiling()
    return {
        "same_output": bool(torch.equal(expected, got)),
        "hooks_left": hooks_left,
        "shallow_hooked": shallow_hooked,
    }


def _two_blocks():
    """`nn.Sequential` of two blocks of two linears: 7 hooked calls per forward (the root, 2
    blocks, 4 linears)."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(4, 4)
            self.mlp = nn.Linear(4, 4)

        def forward(self, x):
            return self.mlp(self.attn(x))

    return nn.Sequential(Block(), Block())


def layer_memory(out):
    """Memory deltas through a scripted probe: each probe call "allocates" one more MiB, so a
    span's delta is 1 + 2 x (hooked calls inside it) MiB."""
    import torch

    from vllm_profiler.layers import LayerProfiler

    model = _two_blocks()
    allocated = [0]

    def probe():
        allocated[0] += 1 << 20
        return allocated[0]

    enable_vllm_profiling(output_dir=out, enable_layer_profiling=True)
    monitor = VLLMPerformanceMonitor()
    with LayerProfiler(model, memory_probe=probe), torch.no_grad():
        for _ in range(2):
            with monitor.profile_inference_step(batch_size=1, num_tokens=4):
                model(torch.ones(1, 4))
    disable_vllm_profiling()
    return {"probe_calls": allocated[0] >> 20}


def layer_device_time(out):
    """Device time through scripted events: each record() advances a fake device clock by
    1 ms, and an event counts as complete only once the "device" has caught up (after a step,
    as vLLM's sync on sampled tokens does). A span's device time is then 1 + 2 x (hooked calls
    inside it) ms, resolved at the next forward without any synchronize(), except at detach."""
    import torch

    from vllm_profiler.layers import LayerProfiler

    class Device:
        clock = 0
        done_upto = 0
        created = 0
        synchronized = 0

    class FakeEvent:
        def __init__(self):
            Device.created += 1
            self.t = None

        def record(self):
            Device.clock += 1
            self.t = Device.clock

        def query(self):
            return self.t <= Device.done_upto

        def synchronize(self):
            Device.synchronized += 1
            Device.done_upto = max(Device.done_upto, self.t)

        def elapsed_time(self, end):
            assert self.query() and end.query(), "elapsed_time of an unfinished pair"
            return float(end.t - self.t)

    model = _two_blocks()
    enable_vllm_profiling(output_dir=out, enable_layer_profiling=True)
    monitor = VLLMPerformanceMonitor()
    profiler = LayerProfiler(model, device_timing=FakeEvent).attach()
    pending_after = []
    with torch.no_grad():
        for step in range(4):
            with monitor.profile_inference_step(batch_size=1, num_tokens=4):
                model(torch.ones(1, 4))
            pending_after.append(profiler.device_timer.pending())
            if step != 1:  # the device lags a whole step once
                Device.done_upto = Device.clock
    profiler.detach()
    disable_vllm_profiling()
    return {"created": Device.created, "synchronized": Device.synchronized,
            "pending_after": pending_after}


def layer_device_time_faults(out):
    """The timed hooks against events that misbehave, a forward that raises, and two
    profilers on one model: the host's forward never sees an error of ours."""
    import torch
    from torch import nn

    from vllm_profiler.layers import LayerProfiler

    class Device:
        clock = 0
        mode = "ok"

    class Event:
        def __init__(self):
            self.t = None

        def record(self):
            if Device.mode == "raise_record":
                raise RuntimeError("scripted record failure")
            Device.clock += 1
            self.t = Device.clock

        def query(self):
            if Device.mode == "raise_query":
                raise RuntimeError("scripted CUDA error in query")
            return True

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            if Device.mode == "raise_elapsed":
                raise RuntimeError("Both events must be recorded")
            special = {"nan": float("nan"), "inf": float("inf"), "negative": -1.0,
                       "huge": 2.0 ** 64 / 1e6}
            return special.get(Device.mode, float(end.t - self.t))

    enable_vllm_profiling(output_dir=out, enable_layer_profiling=True)
    monitor = VLLMPerformanceMonitor()
    x = torch.ones(1, 4)
    result = {"raised": {}, "same_output": {}}

    def forward(model):
        with monitor.profile_inference_step(batch_size=1, num_tokens=4):
            return model(x)

    with torch.no_grad():
        for mode in ["nan", "inf", "negative", "huge", "raise_elapsed", "raise_query",
                     "raise_record"]:
            model = _two_blocks()
            expected = model(x)
            profiler = LayerProfiler(model, prefix=mode, device_timing=Event).attach()
            Device.mode = "ok"
            forward(model)
            Device.mode = mode
            try:
                got = forward(model)
                got = forward(model)
                profiler.detach()
                result["raised"][mode] = None
                result["same_output"][mode] = bool(torch.equal(expected, got))
            except Exception as err:  # noqa: BLE001 - what the test says must not happen
                result["raised"][mode] = repr(err)
        Device.mode = "ok"

        # A forward that raises inside the model, then good ones: pairs still resolve.
        model = _two_blocks()
        failing = {"now": False}

        def fail_hook(module, inputs):
            if failing["now"]:
                raise RuntimeError("forward failed")

        model[1].register_forward_pre_hook(fail_hook)
        profiler = LayerProfiler(model, prefix="raising", device_timing=Event).attach()
        forward(model)
        failing["now"] = True
        try:
            forward(model)
        except RuntimeError:
            pass
        failing["now"] = False
        pending = []
        for _ in range(3):
            forward(model)
            pending.append(profiler.device_timer.pending())
        profiler.detach()
        result["pending_after_raise"] = pending

        # Two profilers on one model: each times its own spans.
        model = _two_blocks()
        outer = LayerProfiler(model, prefix="outer", device_timing=Event).attach()
        inner = LayerProfiler(model[0], prefix="inner", device_timing=Event).attach()
        for _ in range(3):
            forward(model)
        inner.detach()
        outer.detach()
    disable_vllm_profiling()
    return result


def layer_memory_cuda(out):
    """Real CUDA: a layer that keeps a 64 MiB buffer it allocates in its forward."""
    import torch
    from torch import nn

    from vllm_profiler.layers import LayerProfiler

    class Keeper(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.kept = []

        def forward(self, x):
            self.kept.append(torch.empty(64 << 20, dtype=torch.uint8, device=x.device))
            return self.proj(x)

    model = nn.Sequential(Keeper()).cuda()
    enable_vllm_profiling(output_dir=out, enable_layer_profiling=True)
    monitor = VLLMPerformanceMonitor()
    with LayerProfiler(model), torch.no_grad():
        with monitor.profile_inference_step(batch_size=1, num_tokens=8):
            model(torch.ones(1, 8, device="cuda"))
    torch.cuda.synchronize()
    disable_vllm_profiling()
    return {}


SCENARIOS = {
    f.__name__: f
    for f in [
        enable_disable,
        context_raises,
        decorator,
        monitor,
        env_started,
        bad_setting,
        mp_children,
        gpu,
        cpu_detector,
        vllm_engine,
        vllm_batch_queue,
        vllm_child_process,
        vllm_moved,
        vllm_with_another_finder,
        vllm_unhookable_worker,
        layers,
        layer_memory,
        layer_device_time,
        layer_device_time_faults,
        layer_memory_cuda,
    ]
}

if __name__ == "__main__":
    # multiprocessing's spawn and forkserver children import this file as __mp_main__.
    name, out = sys.argv[1], sys.argv[2]
    result = SCENARIOS[name](out, *sys.argv[3:])
    result["pid"] = os.getpid()
    print(json.dumps(result))
