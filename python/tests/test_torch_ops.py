"""Torch-op windows (vllm_profiler.torch_ops) with real torch, CPU build: the torch profiler runs
for K steps of every N, and its ops land in the agent's summary (`torch_op_performance`,
`torch_op_windows`) and trace with exact counts for a known model. The one stand-in is for what
a CPU cannot show: CUDA kernel events, made with torch's own FunctionEvent class."""

import json
import subprocess
import sys
import textwrap

from conftest import clean_env

# A known model: per step two aten::linear (each one aten::addmm writing its output), one
# aten::relu (one aten::clamp_min writing its output).
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from vllm_profiler import VLLMPerformanceMonitor, integration

    steps, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "api":
        integration.enable_vllm_profiling(enable_gpu_monitoring=False, output_dir="out",
                                          enable_torch_op_profiling=True)
    elif mode == "plain":
        integration.enable_vllm_profiling(enable_gpu_monitoring=False, output_dir="out")
    elif mode == "broken":
        from torch.autograd import profiler
        def refuse(self):
            raise RuntimeError("no profiler here")
        profiler.profile.__enter__ = refuse
        integration.enable_vllm_profiling(enable_gpu_monitoring=False, output_dir="out",
                                          enable_torch_op_profiling=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(8, 16)
    monitor = VLLMPerformanceMonitor()
    host = None
    if mode == "host_first":  # the host's own profiler runs all along
        host = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        host.__enter__()
    for i in range(steps):
        with monitor.profile_inference_step(8, 8):
            if mode == "host_during" and i == 2:  # the host's starts inside our window
                host = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                host.__enter__()
            model(x)
            if mode == "disable_in_step" and i == steps - 1:
                integration.disable_vllm_profiling()
    if host is not None:
        host.__exit__(None, None, None)
        linears = sum(e.count for e in host.key_averages() if e.key == "aten::linear")
        with open("host.json", "w") as f:
            json.dump({"linears": linears}, f)
    if mode != "exit":  # "exit": the interpreter's exit ends the window
        integration.disable_vllm_profiling()
        from torch.autograd import profiler
        assert not profiler._is_profiler_enabled, "no profiler of ours is left running"
    """
)


def run_child(library, tmp_path, steps, mode="env", **env_vars):
    env = clean_env()
    env["VLLM_PROFILER_LIBRARY"] = str(library)
    env.update(env_vars)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps), mode], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    [path] = (tmp_path / "out").glob("performance_summary_*.json")
    summary = json.loads(path.read_text())
    trace = json.loads(path.with_name(path.name.replace("performance_summary", "trace")).read_text())
    return summary, trace, proc


def test_windows_of_k_steps_every_n_count_a_known_models_ops_exactly(agent_library, tmp_path):
    summary, trace, proc = run_child(
        agent_library, tmp_path, 10, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_GPU_MONITORING="0",
        VLLM_PROFILING_OUTPUT_DIR="out", VLLM_PROFILING_TORCH_OPS="1",
        VLLM_PROFILING_TORCH_OP_EVERY="4", VLLM_PROFILING_TORCH_OP_STEPS="2",
    )
    # Nothing on the host's output: neither ours nor kineto's log lines.
    assert (proc.stdout, proc.stderr) == ("", "")
    assert summary["total_steps"] == 10
    # Steps 2-3 and 6-7 of 0..9.
    windows = summary["torch_op_windows"]
    assert [(w["window"], w["steps"]) for w in windows] == [(0, 2), (1, 2)]
    assert summary["counters"]["torch_op_windows"] == 2
    ops = summary["torch_op_performance"]
    counts = {name: ops[name]["call_count"] for name in
              ("aten::linear", "aten::addmm", "aten::relu", "aten::clamp_min")}
    assert counts == {"aten::linear": 8, "aten::addmm": 8, "aten::relu": 4, "aten::clamp_min": 4}
    assert "vllm_profiler::step" not in ops, "the step markers are not ops"
    # Memory from torch's allocator events: an 8x16 and an 8x4 float32 output per step's two
    # addmm, one 8x16 per clamp_min.
    assert ops["aten::addmm"]["self_cpu_memory_bytes"] == 4 * (8 * 16 + 8 * 4) * 4
    assert ops["aten::clamp_min"]["self_cpu_memory_bytes"] == 4 * 8 * 16 * 4
    linear = ops["aten::linear"]
    assert 0 < linear["self_host_time_ms"] < linear["host_time_ms"]
    assert linear["device_time_ms"] is None and linear["self_device_memory_bytes"] is None
    for w in windows:
        top = {op["name"]: op["call_count"] for op in w["top_ops"]}
        assert top["aten::addmm"] == 4
        assert w["trace_events"] > 0 and w["dropped_trace_events"] == 0
    # In the trace: every execution, on a torch-op track beside the main thread.
    pid = summary["pid"]
    track = (1 << 30) | pid
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"
             and e["name"] == "thread_name"}
    assert names[track] == f"torch ops (thread {pid})"
    linears = [e for e in trace["traceEvents"] if e.get("cat") == "torch_op"
               and e["name"] == "aten::linear"]
    assert len(linears) == 8 and all(e["tid"] == track for e in linears)
    steps = sorted((e for e in trace["traceEvents"] if e.get("cat") == "step"),
                   key=lambda e: e["ts"])
    # Each window's ops fall within its steps (the torch profiler's clock is tens of
    # microseconds off ours at most).
    for first, last in ((steps[2], steps[3]), (steps[6], steps[7])):
        inside = [e for e in linears
                  if first["ts"] - 200 <= e["ts"] <= last["ts"] + last["dur"] + 200]
        assert len(inside) == 4, (first, last, linears)


def test_the_code_api_turns_windows_on_with_the_defaults(agent_library, tmp_path):
    summary, _, proc = run_child(agent_library, tmp_path, 400, "api")
    assert proc.stderr == ""
    # Steps 195-199 and 395-399.
    assert [w["steps"] for w in summary["torch_op_windows"]] == [5, 5]
    assert summary["torch_op_performance"]["aten::linear"]["call_count"] == 20


def test_windows_are_off_by_default(agent_library, tmp_path):
    summary, _, _ = run_child(agent_library, tmp_path, 120, "plain")
    assert summary["torch_op_performance"] is None and summary["torch_op_windows"] is None
    assert summary["counters"]["torch_op_windows"] == 0


def test_a_window_in_progress_ends_when_profiling_does(agent_library, tmp_path):
    summary, _, _ = run_child(
        agent_library, tmp_path, 3, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_GPU_MONITORING="0",
        VLLM_PROFILING_OUTPUT_DIR="out", VLLM_PROFILING_TORCH_OPS="1",
        VLLM_PROFILING_TORCH_OP_EVERY="4", VLLM_PROFILING_TORCH_OP_STEPS="3",
    )
    # Steps 1 and 2 of a window of 3: it ends at disable with the two it has.
    assert [w["steps"] for w in summary["torch_op_windows"]] == [2]
    assert summary["torch_op_performance"]["aten::relu"]["call_count"] == 2


ENV_WINDOWS = dict(VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_GPU_MONITORING="0",
                   VLLM_PROFILING_OUTPUT_DIR="out", VLLM_PROFILING_TORCH_OPS="1",
                   VLLM_PROFILING_TORCH_OP_EVERY="4", VLLM_PROFILING_TORCH_OP_STEPS="3")


def test_a_window_open_at_the_interpreters_exit_ends_there(agent_library, tmp_path):
    # torch crashes the process at exit while a profiler runs: ours stops first.
    summary, _, proc = run_child(agent_library, tmp_path, 3, "exit", **ENV_WINDOWS)
    assert proc.stderr == ""
    assert [w["steps"] for w in summary["torch_op_windows"]] == [2]


def test_disable_inside_a_profiled_step_stops_the_window(agent_library, tmp_path):
    summary, _, proc = run_child(agent_library, tmp_path, 3, "disable_in_step", **ENV_WINDOWS)
    assert proc.stderr == ""
    # Steps 1 and 2, the second still open when profiling ended.
    assert [w["steps"] for w in summary["torch_op_windows"]] == [2]
    assert summary["torch_op_performance"]["aten::relu"]["call_count"] == 2


def test_the_hosts_own_torch_profiler_comes_first(agent_library, tmp_path):
    # Running before: no window starts, and the host's profiler sees every op.
    summary, _, proc = run_child(agent_library, tmp_path, 12, "host_first", **ENV_WINDOWS)
    # Kineto's log lines are the host's profiler's (kineto started before any window of ours).
    assert not [line for line in proc.stderr.splitlines() if "vllm-profiler" in line]
    assert summary["torch_op_windows"] is None
    assert json.loads((tmp_path / "host.json").read_text()) == {"linears": 24}
    # Started inside a window: ours is dropped, with one warning, and none starts while the
    # host's runs; the host's sees the ops from its start.
    out = tmp_path / "during"
    out.mkdir()
    summary, _, proc = run_child(agent_library, out, 12, "host_during", **ENV_WINDOWS)
    assert proc.stderr.splitlines() == [
        "vllm-profiler: the host started a torch profiler during a torch-op window: the window"
        " was dropped, and none starts while a profiler of the host runs"]
    assert summary["torch_op_windows"] is None
    assert json.loads((out / "host.json").read_text()) == {"linears": 20}


def test_a_torch_profiler_that_fails_turns_windows_off_with_one_warning(agent_library, tmp_path):
    summary, _, proc = run_child(
        agent_library, tmp_path, 30, "broken", VLLM_PROFILING_TORCH_OP_EVERY="4",
        VLLM_PROFILING_TORCH_OP_STEPS="1",
    )
    lines = proc.stderr.splitlines()
    assert lines == ["vllm-profiler: torch-op windows are off in this process: RuntimeError: "
                     "no profiler here"], proc.stderr
    assert summary["total_steps"] == 30
    assert summary["torch_op_windows"] is None


def test_a_bad_schedule_warns_and_keeps_the_default(agent_library, tmp_path):
    summary, _, proc = run_child(
        agent_library, tmp_path, 200, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_GPU_MONITORING="0",
        VLLM_PROFILING_OUTPUT_DIR="out", VLLM_PROFILING_TORCH_OPS="1",
        VLLM_PROFILING_TORCH_OP_EVERY="1",
    )
    assert "VLLM_PROFILING_TORCH_OP_EVERY" in proc.stderr and "200" in proc.stderr
    assert [w["steps"] for w in summary["torch_op_windows"]] == [5]


# The stand-in, for what a CPU cannot make: kineto's results of a window on a GPU, with CUDA
# kernels linked to the runtime calls that launched them and a device allocation, read through
# the same accessors as torch's KinetoEvent, and sent through the real agent.
CUDA_CHILD = textwrap.dedent(
    """
    import json, time, types
    from torch.autograd import DeviceType
    from vllm_profiler import _native, torch_ops

    _native.enable({"enable_gpu_monitoring": False, "output_dir": "out"})
    lib = _native.library()
    handles = []
    for _ in range(2):
        handle = lib.vllm_profiler_step_begin(1, 1)
        lib.vllm_profiler_step_end(handle)
        handles.append(handle)
    time.sleep(0.01)  # the window's times must fall after the session's start
    base = time.time_ns() - 1_000_000

    class Event:
        def __init__(self, name, start_us, end_us, device=DeviceType.CPU, correlation=0,
                     linked=0, nbytes=0):
            self.values = dict(name=name, start_ns=base + start_us * 1000,
                               duration_ns=(end_us - start_us) * 1000, device_type=device,
                               start_thread_id=1, correlation_id=correlation,
                               linked_correlation_id=linked, nbytes=nbytes, device_index=0,
                               device_resource_id=7)
        def __getattr__(self, key):
            return lambda: self.values[key]

    CUDA = DeviceType.CUDA
    events = [
        Event(torch_ops.MARKER, 0, 100, correlation=1),
        Event("aten::mm", 10, 40, correlation=2),
        Event("cudaLaunchKernel", 20, 25, correlation=3),
        Event("gemm_kernel", 50, 70, CUDA, linked=3),
        Event(torch_ops.MARKER, 200, 300, correlation=4),
        Event("aten::mm", 210, 240, correlation=5),
        Event("[memory]", 212, 212, CUDA, nbytes=512),
        Event("cudaLaunchKernel", 215, 220, correlation=6),
        Event("gemm_kernel", 250, 280, CUDA, linked=6),
        Event("softmax_kernel", 290, 295, CUDA),
    ]
    prof = types.SimpleNamespace(kineto_results=types.SimpleNamespace(events=lambda: events))
    document = torch_ops.build_document(torch_ops.raw_events(prof), handles, device=True)
    kernels = document["kernels"]
    assert torch_ops.send(lib, document) == 0, _native.last_error()
    _native.disable()
    print(json.dumps(kernels))
    """
)


def test_cuda_kernels_of_a_window_go_to_the_kernel_level_by_step(agent_library, tmp_path):
    env = clean_env()
    env["VLLM_PROFILER_LIBRARY"] = str(agent_library)
    proc = subprocess.run([sys.executable, "-c", CUDA_CHILD], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kernels = json.loads(proc.stdout.splitlines()[-1])
    assert [(k["name"], k["step"], k["stream"], k["duration_ns"]) for k in kernels] == [
        ("gemm_kernel", 0, 7, 20_000), ("gemm_kernel", 1, 7, 30_000),
        ("softmax_kernel", 1, 7, 5_000)]
    [path] = (tmp_path / "out").glob("performance_summary_*.json")
    summary = json.loads(path.read_text())
    assert summary["kernel_performance"]["gemm_kernel"]["call_count"] == 2
    assert summary["counters"]["unattributed_kernels"] == 0
    steps = json.loads(path.with_name(path.name.replace("performance_summary", "detailed_steps"))
                       .read_text())["detailed_steps"]
    assert [s["kernel_count"] for s in steps] == [1, 2]
    ops = summary["torch_op_performance"]
    mm, launch = ops["aten::mm"], ops["cudaLaunchKernel"]
    # A kernel's time is its launching call's own, and its enclosing op's with children.
    assert (mm["call_count"], mm["device_time_ms"], mm["self_device_time_ms"]) == (2, 0.05, 0.0)
    assert (launch["device_time_ms"], launch["self_device_time_ms"]) == (0.05, 0.05)
    assert (mm["self_device_memory_bytes"], launch["self_device_memory_bytes"]) == (512, 0)
    assert mm["self_host_time_ms"] == 0.05, "30 us each, less the 5 us call inside"
