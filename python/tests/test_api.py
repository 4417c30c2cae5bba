"""Seed 004's Python API over the real agent, preloaded and loaded by the package."""

import json
import os
import subprocess
import sys

from conftest import PACKAGE_DIR, clean_env, read_report


def result(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_enable_then_disable_writes_exact_reports(run_scenario):
    proc, out = run_scenario("enable_disable")
    pid = result(proc)["pid"]
    summary = read_report(out, "performance_summary", pid)
    assert summary["total_steps"] == 5
    assert summary["total_batch_size"] == 1 + 2 + 3 + 4 + 5
    assert summary["total_tokens"] == 10 * 15
    steps = read_report(out, "detailed_steps", pid)["detailed_steps"]
    assert [s["batch_size"] for s in steps] == [1, 2, 3, 4, 5]
    assert [s["num_tokens"] for s in steps] == [10, 20, 30, 40, 50]
    assert all(s["duration_ms"] >= 1.0 for s in steps)
    history = read_report(out, "gpu_history", pid)
    assert history["detector"] == "CPUDetector"
    assert history["host_history"], "the sampler ran"


def test_context_manager_exports_even_when_the_block_raises(run_scenario):
    proc, out = run_scenario("context_raises")
    r = result(proc)
    assert r["error"] == "the block failed"
    assert r["enabled_after"] is False
    assert read_report(out, "performance_summary", r["pid"])["total_steps"] == 3


def test_decorator_keeps_metadata_and_profiles_sync_and_async(run_scenario):
    proc, out = run_scenario("decorator")
    r = result(proc)
    assert r["sync"] == "done:2"
    assert r["async"] == 6
    assert r["names"] == ["run_inference", "run_async"]
    assert r["docs"] == ["Runs n steps.", "Async steps."]
    assert r["signature"] == "(n: int, label: str = 'x') -> str"
    assert r["is_coroutine"] is True
    # Two decorated calls: the second re-enables the same process's profiler, so the final
    # report counts both calls' steps.
    steps = read_report(out, "detailed_steps", r["pid"])["detailed_steps"]
    assert [s["batch_size"] for s in steps] == [1, 2, 101, 102, 103]


def test_monitor_callbacks_summaries_and_combined_report(run_scenario):
    proc, out = run_scenario("monitor")
    r = result(proc)
    assert [s["step_id"] for s in r["seen"]] == [0, 1, 2, 3]
    assert [s["batch_size"] for s in r["seen"]] == [1, 2, 3, 4]
    assert [s["num_tokens"] for s in r["seen"]] == [10, 20, 30, 40]
    assert all(s["duration_ms"] >= 1.0 for s in r["seen"])
    # The raising callback ran for every step; the steps were still recorded, and the
    # failure was logged once.
    assert r["boom_calls"] == [0, 1, 2]
    assert proc.stderr.count("on_step_completed raised") == 1
    assert r["all_steps"] == 7
    assert r["last_two_steps"] == 2
    assert r["last_two_tokens"] == 60 + 70
    with open(r["report"], encoding="utf-8") as f:
        report = json.load(f)
    assert r["report_mode"] == "0o644"
    assert report["performance_summary"]["total_steps"] == 7
    assert len(report["detailed_steps"]["detailed_steps"]) == 7
    assert report["gpu_history"]["detector"] == "CPUDetector"
    # stop_monitoring wrote the final reports too.
    assert read_report(out, "performance_summary", r["pid"])["total_steps"] == 7


def test_profiler_started_from_the_environment_takes_api_settings(run_scenario):
    proc, out = run_scenario("env_started", env_extra={"VLLM_ENABLE_PROFILING": "1"})
    r = result(proc)
    if run_scenario.mode == "preloaded":
        assert r["was_enabled"] is True
    assert read_report(out, "performance_summary", r["pid"])["total_steps"] == 6


def test_a_bad_setting_is_an_exception_with_the_library_message(run_scenario):
    proc, _ = run_scenario("bad_setting")
    r = result(proc)
    assert r["code"] == -4  # VLLM_PROFILER_E_INVALID_CONFIG
    assert "sample_interval" in r["message"]
    assert r["enabled"] is False


def test_a_missing_library_says_where_it_looked(tmp_path):
    env = clean_env()
    env["VLLM_PROFILER_LIBRARY"] = str(tmp_path / "nowhere" / "libvllm_profiler.so")
    code = (
        "import vllm_profiler\n"
        "try:\n"
        "    vllm_profiler.enable_vllm_profiling()\n"
        "except vllm_profiler.LibraryNotFoundError as err:\n"
        "    print(err)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, timeout=60
    )
    assert proc.returncode == 0
    message = proc.stdout
    assert "libvllm_profiler.so not found" in message
    assert "LD_PRELOAD" in message
    assert str(tmp_path / "nowhere" / "libvllm_profiler.so") in message
    assert os.path.join(str(PACKAGE_DIR), "vllm_profiler", "libvllm_profiler.so") in message
