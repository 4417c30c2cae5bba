"""Torch-op windows across threads, forks and a change of setting, with real torch (CPU): torch
stops a profiler only on the thread that started it, a forked child starts its own windows,
and windows turned off end the one in progress."""

import json
import subprocess
import sys
import textwrap

from conftest import clean_env

# Windows of 3 steps at steps 7-9 of every 10. Per step: one aten::linear.
CHILD = textwrap.dedent(
    """
    import json, multiprocessing, sys, threading
    import torch
    from torch._C._autograd import _profiler_enabled
    from torch.autograd import profiler
    from vllm_profiler import VLLMPerformanceMonitor, integration

    mode = sys.argv[1]
    integration.enable_vllm_profiling(enable_gpu_monitoring=False, output_dir="out",
                                      enable_torch_op_profiling=True)
    model, x = torch.nn.Linear(16, 4), torch.randn(8, 16)
    monitor = VLLMPerformanceMonitor()
    result = {}

    def steps(n):
        for _ in range(n):
            with monitor.profile_inference_step(8, 8):
                model(x)

    if mode == "other_thread":
        # Thread A's window is open (1 of its 3 steps done) when the main thread disables.
        opened, disabled = threading.Event(), threading.Event()
        def a():
            steps(8)
            result["a_running_before"] = _profiler_enabled()
            opened.set()
            disabled.wait()
            result["a_running_after_disable"] = _profiler_enabled()
            steps(1)  # profiling is off: A stops what is left of its profiler here
            result["a_running_after_its_step"] = _profiler_enabled()
        thread = threading.Thread(target=a)
        thread.start()
        opened.wait()
        integration.disable_vllm_profiling()
        disabled.set()
        thread.join()
    elif mode == "fork":
        # A child forked inside a profiled step: the parent's window is not the child's.
        def child():
            steps(20)
            integration.disable_vllm_profiling()
        steps(8)
        with monitor.profile_inference_step(8, 8):
            model(x)
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            process.join(120)
            result["child_exit"] = process.exitcode
        steps(1)
        integration.disable_vllm_profiling()
    elif mode == "off":
        steps(8)  # a window opens at step 7
        integration.enable_vllm_profiling(enable_gpu_monitoring=False, output_dir="out",
                                          enable_torch_op_profiling=False)
        steps(12)
        integration.disable_vllm_profiling()
    result["running_at_end"] = profiler._is_profiler_enabled
    with open("result.json", "w") as f:
        json.dump(result, f)
    """
)

ENV = dict(VLLM_PROFILING_TORCH_OP_EVERY="10", VLLM_PROFILING_TORCH_OP_STEPS="3")


def run_child(library, tmp_path, mode):
    env = clean_env()
    env["VLLM_PROFILER_LIBRARY"] = str(library)
    env.update(ENV)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summaries = {}
    for path in (tmp_path / "out").glob("performance_summary_*.json"):
        summaries[int(path.stem.rsplit("_", 1)[1])] = json.loads(path.read_text())
    return summaries, json.loads((tmp_path / "result.json").read_text())


def windows(summary):
    ops = summary["torch_op_performance"] or {}
    return ([w["steps"] for w in summary["torch_op_windows"] or []],
            ops.get("aten::linear", {}).get("call_count", 0))


def test_a_window_ended_from_another_thread_is_dropped_and_stops_on_its_own(agent_library,
                                                                          tmp_path):
    summaries, result = run_child(agent_library, tmp_path, "other_thread")
    [summary] = summaries.values()
    assert summary["total_steps"] == 8
    # Its events are on thread A, which torch alone can read: the window is dropped.
    assert windows(summary) == ([], 0)
    assert result == {"a_running_before": True, "a_running_after_disable": True,
                      "a_running_after_its_step": False, "running_at_end": False}


def test_a_child_forked_inside_a_window_profiles_windows_of_its_own(agent_library, tmp_path):
    summaries, result = run_child(agent_library, tmp_path, "fork")
    assert result == {"child_exit": 0, "running_at_end": False}
    assert len(summaries) == 2
    [child] = [s for s in summaries.values() if s["total_steps"] == 20]
    [parent] = [s for s in summaries.values() if s is not child]
    # The parent: steps 7-9 (its step 8 the one the child was forked in).
    assert parent["total_steps"] == 10 and windows(parent) == ([3], 3)
    # The child: its own steps 7-9 and 17-19, as in a fresh process.
    assert child["total_steps"] == 20 and windows(child) == ([3, 3], 6)


def test_windows_turned_off_end_the_one_in_progress(agent_library, tmp_path):
    summaries, result = run_child(agent_library, tmp_path, "off")
    [summary] = summaries.values()
    assert summary["total_steps"] == 20
    # Step 7 opened the window; turned off before step 8, it ended with one step.
    assert windows(summary) == ([1], 1)
    assert result == {"running_at_end": False}
