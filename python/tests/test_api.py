"""Seed 004's Python API over the real agent, preloaded and loaded by the package."""

import _ctypes
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import PACKAGE_DIR, clean_env, read_report, require_module


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


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_write_their_final_reports(run_scenario, method):
    # Fork and forkserver children leave with os._exit: the package's multiprocessing
    # finalizer calls vllm_profiler_finish, so the child that recorded still gets its final
    # reports (there is no export interval), and the one that recorded nothing writes none.
    proc, out = run_scenario("mp_children", method)
    pids = result(proc)
    child = read_report(out, "detailed_steps", pids["recording_child"])
    assert [s["batch_size"] for s in child["detailed_steps"]] == [1, 2, 3]
    parent = read_report(out, "detailed_steps", pids["pid"])
    assert [s["batch_size"] for s in parent["detailed_steps"]] == [1, 2]
    written = sorted(p.name for p in out.iterdir())
    writers = {int(n.rsplit("_", 1)[1].split(".")[0]) for n in written}
    assert writers == {pids["pid"], pids["recording_child"]}, written


def test_a_bad_setting_is_an_exception_with_the_library_message(run_scenario):
    proc, _ = run_scenario("bad_setting")
    r = result(proc)
    assert r["code"] == -4  # VLLM_PROFILER_E_INVALID_CONFIG
    assert "sample_interval" in r["message"]
    assert r["enabled"] is False


def _load_error(tmp_path, library, **env_vars):
    env = clean_env()
    env["VLLM_PROFILER_LIBRARY"] = str(library)
    env.update(env_vars)
    code = (
        "import vllm_profiler\n"
        "try:\n"
        "    vllm_profiler.enable_vllm_profiling()\n"
        "except vllm_profiler.LibraryNotFoundError as err:\n"
        "    print(err)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0
    return proc.stdout.strip()


def test_a_missing_library_named_by_the_environment_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "libvllm_profiler.so"
    assert _load_error(tmp_path, missing) == (
        f"VLLM_PROFILER_LIBRARY={str(missing)!r}: no such file. Point it at "
        "libvllm_profiler.so or unset it."
    )


def test_a_relative_library_path_is_that_file_not_the_loaders_search(tmp_path, agent_library):
    # A text file of the agent's name here; the real agent on the loader's search path.
    (tmp_path / "libvllm_profiler.so").write_text("not a library")
    message = _load_error(tmp_path, "libvllm_profiler.so",
                          LD_LIBRARY_PATH=str(agent_library.parent))
    assert message.startswith(
        "VLLM_PROFILER_LIBRARY='libvllm_profiler.so' cannot be loaded: "), message


def test_a_library_named_by_the_environment_that_is_not_the_agent_is_an_error(tmp_path):
    # Never a silent fallback to another copy (the package's own, were there one).
    message = _load_error(tmp_path, "/etc/passwd")
    assert message.startswith("VLLM_PROFILER_LIBRARY='/etc/passwd' cannot be loaded: ")
    other = _ctypes.__file__  # a shared library, not the agent
    message = _load_error(tmp_path, other)
    assert message == (
        f"VLLM_PROFILER_LIBRARY={other!r} is a shared library but not libvllm_profiler.so (it "
        "has no vllm_profiler_step_begin)"
    )


GPU_SCRIPT = {
    "devices": [
        {"name": "Fake GPU Zero", "uuid": "GPU-0", "memory_total_mb": 81920, "frames": [
            {"gpu_utilization": 37, "memory_controller_utilization": 5, "memory_used_mb": 20480,
             "temperature": 51, "power_draw_mw": 123500, "power_limit_mw": 700000}]},
        {"name": "Fake GPU One", "uuid": "GPU-1", "memory_total_mb": 40960, "frames": [
            {"gpu_utilization": 88, "memory_controller_utilization": 9, "memory_used_mb": 10240,
             "temperature": 64, "power_draw_mw": 250000, "power_limit_mw": 400000}]},
    ]
}


def test_gpu_monitors_and_detector_read_the_agents_sampler(run_scenario, fake_nvml, tmp_path):
    script = tmp_path / "nvml.json"
    script.write_text(json.dumps(GPU_SCRIPT))
    proc, _ = run_scenario(
        "gpu",
        env_extra={"VLLM_PROFILING_NVML_LIBRARY": str(fake_nvml), "FAKE_NVML_SCRIPT": str(script)},
    )
    r = result(proc)
    assert r["current"] == {
        "device_id": 1,
        "gpu_utilization": 88.0,
        "memory_utilization": 25.0,
        "temperature": 64.0,
        "power_draw": 250.0,
        "memory_used_mb": 10240.0,
    }
    assert r["history_devices"] == [1]
    assert r["history_len"] >= 3
    assert r["recent_none"] == 0
    assert r["seed000"] == {
        "gpu_util_percent": 37.0,
        "memory_util_percent": 25.0,
        "memory_used_mb": 20480,
        "memory_total_mb": 81920,
        "memory_free_mb": 61440,
    }
    assert r["seed000_missing"] is None
    assert r["singleton"] is True
    assert r["detector"] == "NVMLDetector"
    assert [g["name"] for g in r["list"]] == ["Fake GPU Zero", "Fake GPU One"]
    assert r["info1"] == {
        "index": 1,
        "name": "Fake GPU One",
        "gpu_type": "nvidia",
        "total_memory_mb": 40960,
        "used_memory_mb": 10240,
        "free_memory_mb": 30720,
        "utilization_percent": 88.0,
    }


def test_without_a_gpu_the_detector_answers_with_the_cpu(run_scenario):
    proc, _ = run_scenario("cpu_detector")
    r = result(proc)
    assert r["detector"] == "CPUDetector" or r["detector"].startswith("Torch")
    if r["detector"] == "CPUDetector":
        assert [g["gpu_type"] for g in r["list"]] == ["cpu"]
        assert r["seed000"] is None


STANDIN = PACKAGE_DIR / "tests" / "standin"
STANDIN_MOVED = PACKAGE_DIR / "tests" / "standin_moved"
STANDIN_UNHOOKABLE = PACKAGE_DIR / "tests" / "standin_unhookable"


def vllm_env(root):
    return {
        "VLLM_ENABLE_PROFILING": "1",
        "VLLM_PROFILER_PTH_DIR": str(PACKAGE_DIR),  # holds vllm_profiler.pth
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_DIR), str(root)]),
    }


def test_vllm_engine_steps_become_profiler_steps_without_code_changes(run_scenario, tmp_path):
    """Mechanism test: a stand-in laid out as vllm/v1/engine/core.py with vLLM's names."""
    env = vllm_env(STANDIN)
    env["VLLM_PROFILING_OUTPUT_DIR"] = str(tmp_path / "engine")
    proc, _ = run_scenario("vllm_engine", env_extra=env)
    r = result(proc)
    assert r["wrapped_name"] == "step"
    assert r["loader"] == "SourceFileLoader"
    assert r["steps"] == 5
    steps = read_report(tmp_path / "engine", "detailed_steps", r["pid"])["detailed_steps"]
    # Prefill of all three requests, then decodes as they finish; then one idle step, which
    # scheduled nothing: counted apart, in no duration.
    assert [s["batch_size"] for s in steps] == [3, 3, 2, 1]
    assert [s["num_tokens"] for s in steps] == [21, 3, 2, 1]
    assert [s["engine_step"] for s in steps] == [0, 1, 2, 3]
    summary = read_report(tmp_path / "engine", "performance_summary", r["pid"])
    assert (summary["total_steps"], summary["empty_steps"]) == (4, 1)
    assert summary["total_tokens"] == 27


def test_vllm_batch_queue_steps_are_profiler_steps_too(run_scenario, tmp_path):
    """Mechanism test: `EngineCore.step_with_batch_queue` (pipeline parallelism) of the
    stand-in, bound as vLLM binds it (`self.step_fn` in `__init__`)."""
    env = vllm_env(STANDIN)
    env["VLLM_PROFILING_OUTPUT_DIR"] = str(tmp_path / "queue")
    proc, _ = run_scenario("vllm_batch_queue", env_extra=env)
    r = result(proc)
    assert r["wrapped_name"] == "step_with_batch_queue"
    assert r["calls"] == 6
    steps = read_report(tmp_path / "queue", "detailed_steps", r["pid"])["detailed_steps"]
    # A call that schedules a batch and returns at once, then one that schedules nothing (the
    # requests are in flight) and waits for the oldest batch; in turns. Those that scheduled
    # nothing are empty steps.
    assert [s["batch_size"] for s in steps] == [2, 2, 1]
    assert [s["num_tokens"] for s in steps] == [12, 2, 1]
    summary = read_report(tmp_path / "queue", "performance_summary", r["pid"])
    assert (summary["total_steps"], summary["empty_steps"]) == (3, 3)


def test_engine_processes_started_after_enable_profile_themselves(run_scenario):
    """Mechanism test: enable_vllm_profiling in the parent, the stand-in engine stepping in a
    spawned process (vLLM's EngineCoreProc runs that way)."""
    env = vllm_env(STANDIN)
    env.pop("VLLM_ENABLE_PROFILING")  # profiling starts from the API, not the environment
    proc, out = run_scenario("vllm_child_process", env_extra=env)
    r = result(proc)
    assert (r["child_exit"], r["late_exit"], r["env_after"]) == (0, 0, None)
    steps = read_report(out, "detailed_steps", r["child"])["detailed_steps"]
    # Prefill of both (10 tokens), then decodes: r1 ends after 2 tokens, r0 after 3.
    assert [(s["batch_size"], s["num_tokens"]) for s in steps] == [(2, 10), (2, 2), (1, 1)]
    assert not list(out.glob(f"*_{r['late']}.json"))
    assert not (out / f"detailed_steps_{r['pid']}.json").exists()  # the parent ran no step


def test_the_import_hook_composes_with_another_delegating_finder(run_scenario, tmp_path):
    """Mechanism test: a second finder that delegates to sys.meta_path with no guard of its
    own, in front of ours: the import ends (no RecursionError), the engine is wrapped once and
    its steps are recorded."""
    env = vllm_env(STANDIN)
    env["VLLM_PROFILING_OUTPUT_DIR"] = str(tmp_path / "out")
    proc, _ = run_scenario("vllm_with_another_finder", env_extra=env)
    r = result(proc)
    assert r["patched"] is True
    assert r["asked"] == 2, "theirs, then theirs again through ours, which then answers"
    steps = read_report(tmp_path / "out", "detailed_steps", r["pid"])["detailed_steps"]
    assert [(s["batch_size"], s["num_tokens"]) for s in steps] == [(1, 4), (1, 1)]
    assert "RecursionError" not in proc.stderr


def test_a_worker_whose_model_cannot_be_hooked_is_one_warning_and_still_steps(
        run_scenario, tmp_path):
    """Mechanism test (a stand-in worker whose runner hides its model): layer profiling on, the
    worker's model executions are steps, with its rank, and one line says layers are not
    profiled."""
    env = vllm_env(STANDIN_UNHOOKABLE)
    env["VLLM_ENABLE_LAYER_PROFILING"] = "1"
    env["VLLM_PROFILING_OUTPUT_DIR"] = str(tmp_path / "out")
    proc, _ = run_scenario("vllm_unhookable_worker", env_extra=env)
    r = result(proc)
    warnings = [l for l in proc.stderr.splitlines() if "could be hooked" in l]
    assert len(warnings) == 1, proc.stderr
    assert "no model of Worker" in warnings[0]
    steps = read_report(tmp_path / "out", "detailed_steps", r["pid"])
    assert [(s["batch_size"], s["num_tokens"]) for s in steps["detailed_steps"]] == [
        (1, 4), (1, 3), (1, 2)]
    assert (steps["role"], steps["rank"]) == ("worker", 3)


def test_moved_vllm_names_give_one_warning_and_vllm_still_imports(run_scenario):
    proc, _ = run_scenario("vllm_moved", env_extra=vllm_env(STANDIN_MOVED))
    assert result(proc)["value"] == 42
    warnings = [l for l in proc.stderr.splitlines() if "EngineCore.step not found" in l]
    assert len(warnings) == 1, proc.stderr


def test_layer_hooks_record_exact_module_paths_and_leave_no_hook(run_scenario):
    require_module("torch", "torch is not installed: layer hooks need a real nn.Module"
                   " (bash tests/python_env.sh installs it)")
    proc, out = run_scenario("layers", timeout=180)
    r = result(proc)
    assert r["same_output"] is True
    assert r["hooks_left"] == 0
    called = ["model", "model.embed_tokens", "model.norm"]
    for i in (0, 1):
        block = f"model.layers.{i}"
        called += [block, f"{block}.self_attn", f"{block}.self_attn.q_proj",
                   f"{block}.self_attn.o_proj", f"{block}.mlp", f"{block}.mlp.up_proj",
                   f"{block}.mlp.down_proj"]
    # The ModuleList itself is never called, so it records nothing.
    depth_two = ["model", "model.embed_tokens", "model.layers", "model.layers.0", "model.layers.1"]
    assert r["shallow_hooked"] == depth_two
    summary = read_report(out, "performance_summary", r["pid"])
    layers = summary["layer_performance"]
    expected_counts = {name: 3 for name in called}
    for name in ["model", "model.embed_tokens", "model.layers.0", "model.layers.1"]:
        expected_counts[name] += 1  # the fourth step hooked only depth <= 2, without norm
    assert {k: v["call_count"] for k, v in layers.items()} == expected_counts
    steps = read_report(out, "detailed_steps", r["pid"])["detailed_steps"]
    assert len(steps) == 4
    assert set(steps[0]["layer_timings"]) == set(called)
    assert steps[0]["layer_timings"]["model.layers.1.self_attn"]["parent"] == "model.layers.1"
    assert set(steps[3]["layer_timings"]) == {"model", "model.embed_tokens", "model.layers.0", "model.layers.1"}
    # On CPU there is no device time: null, never a made-up figure.
    assert all(t["gpu_duration_ms"] is None for s in steps for t in s["layer_timings"].values())
    assert all(s["gpu_duration_ms"] is None for s in steps)
    assert all(v["avg_gpu_duration_ms"] is None for v in layers.values())


def test_layer_spans_carry_memory_deltas(run_scenario):
    """The memory path of the layer hooks, with a scripted probe in place of
    torch.cuda.memory_allocated (no CUDA here; the next test covers the real one)."""
    require_module("torch", "torch is not installed: layer hooks need a real nn.Module"
                   " (bash tests/python_env.sh installs it)")
    proc, out = run_scenario("layer_memory", timeout=180)
    r = result(proc)
    # Per step: 7 hooked calls (model, 2 blocks, 4 linears), 2 probe reads each.
    assert r["probe_calls"] == 2 * 7 * 2
    steps = read_report(out, "detailed_steps", r["pid"])["detailed_steps"]
    for step in steps:
        deltas = {k: v["memory_delta_mb"] for k, v in step["layer_timings"].items()}
        assert deltas == {"model": 13.0, "model.0": 5.0, "model.1": 5.0, "model.0.attn": 1.0,
                          "model.0.mlp": 1.0, "model.1.attn": 1.0, "model.1.mlp": 1.0}
    layers = read_report(out, "performance_summary", r["pid"])["layer_performance"]
    assert layers["model"]["avg_memory_delta_mb"] == 13.0
    assert layers["model.1.mlp"]["avg_memory_delta_mb"] == 1.0


def test_layer_device_time_is_resolved_a_forward_late_without_a_sync(run_scenario):
    """The device-time path of the layer hooks, with scripted events in place of CUDA's (no
    CUDA here): exact device times per layer and step, host times untouched, events reused,
    no synchronize() but the one pair left at detach."""
    require_module("torch", "torch is not installed: layer hooks need a real nn.Module"
                   " (bash tests/python_env.sh installs it)")
    proc, out = run_scenario("layer_device_time", timeout=180)
    r = result(proc)
    # 7 pairs per forward; a forward's pairs wait for the next one (step 1's for two).
    assert r["pending_after"] == [7, 7, 14, 7]
    assert r["synchronized"] == 7, "only the last forward's pairs, at detach"
    assert r["created"] <= 2 * 7 * 3, "events come back to the pool"
    expected = {"model": 13.0, "model.0": 5.0, "model.1": 5.0, "model.0.attn": 1.0,
                "model.0.mlp": 1.0, "model.1.attn": 1.0, "model.1.mlp": 1.0}
    steps = read_report(out, "detailed_steps", r["pid"])["detailed_steps"]
    assert len(steps) == 4
    for step in steps:
        timings = step["layer_timings"]
        assert {k: v["gpu_duration_ms"] for k, v in timings.items()} == expected
        assert all(v["duration_ms"] < 1000 for v in timings.values()), "host time"
        assert step["gpu_duration_ms"] is None, "no step timer in this scenario"
    summary = read_report(out, "performance_summary", r["pid"])
    layers = summary["layer_performance"]
    assert {k: v["avg_gpu_duration_ms"] for k, v in layers.items()} == expected
    assert layers["model"]["total_gpu_duration_ms"] == 4 * 13.0
    assert summary["counters"]["unmatched_gpu_durations"] == 0
    # The trace: every span's device time as `gpu_ms` beside its host length.
    spans = [e for e in read_report(out, "trace", r["pid"])["traceEvents"]
             if e["ph"] == "X" and e.get("cat") == "span"]
    assert len(spans) == 4 * 7
    assert sorted({(e["name"], e["args"]["gpu_ms"]) for e in spans}) == sorted(expected.items())


def test_timed_layer_hooks_never_raise_into_the_host_and_recover_after_a_failed_forward(
        run_scenario):
    """Outside tester's findings: events whose elapsed time is NaN, infinite, negative or
    past 2**64 ns, or whose record/query/elapsed_time raise; a forward that raised; two
    profilers on one model."""
    require_module("torch", "torch is not installed: layer hooks need a real nn.Module"
                   " (bash tests/python_env.sh installs it)")
    proc, out = run_scenario("layer_device_time_faults", timeout=180)
    r = result(proc)
    modes = ["nan", "inf", "negative", "huge", "raise_elapsed", "raise_query", "raise_record"]
    assert r["raised"] == {mode: None for mode in modes}
    assert r["same_output"] == {mode: True for mode in modes}
    # The raised forward's stale entries are dropped at the next root: pairs keep resolving.
    assert r["pending_after_raise"] == [7, 7, 7]
    summary = read_report(out, "performance_summary", r["pid"])
    layers = summary["layer_performance"]
    for mode in modes:
        # The first forward's pairs were measured (or lost) under the bad mode: none is made up.
        assert layers[mode]["call_count"] == 3
        assert layers[mode]["total_gpu_duration_ms"] in (None, 13.0), (mode, layers[mode])
    assert layers["raising"]["avg_gpu_duration_ms"] == 13.0
    # Each profiler's spans have their own device time: the outer root spans 13 records, the
    # inner (model[0], hooked twice) 1 + 2 x 2 of its own records plus the outer's inside it.
    assert layers["outer"]["avg_gpu_duration_ms"] is not None
    assert layers["inner"]["avg_gpu_duration_ms"] is not None
    assert layers["inner.attn"]["avg_gpu_duration_ms"] is not None


def test_layer_memory_delta_on_a_real_cuda_device(run_scenario):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        pytest.skip("no CUDA device here: the memory path is covered by the scripted probe test")
    proc, out = run_scenario("layer_memory_cuda", timeout=180)
    steps = read_report(out, "detailed_steps", result(proc)["pid"])["detailed_steps"]
    timings = steps[0]["layer_timings"]
    assert timings["model.0"]["memory_delta_mb"] >= 64.0
    assert timings["model"]["memory_delta_mb"] >= 64.0


ODD_ENGINES = {
    # A step that is a static method, and an engine made by __new__ alone: neither may break.
    "static": '''
class EngineCore:
    @staticmethod
    def step():
        return "static step"
''',
    "new_only": '''
class EngineCore:
    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.args = (args, kwargs)
        return self

    def step(self):
        return "step", self.args
''',
    # No step at all: one warning, which must not raise where stderr is closed.
    "moved": '''
class EngineCore:
    def run(self):
        return "run"
''',
}

ODD_DRIVER = '''
import importlib, site, sys
site.addsitedir(sys.argv[1])
import vllm.v1.engine.core as core
variant = sys.argv[2]
if variant == "static":
    print(core.EngineCore.step(), core.EngineCore().step())
elif variant == "new_only":
    print(core.EngineCore(1, 2, x=3).step())
else:
    print(core.EngineCore().run())
'''


@pytest.mark.parametrize("variant", sorted(ODD_ENGINES))
def test_odd_engine_classes_run_as_without_the_hook(variant, tmp_path):
    """vLLM-like classes the hook must leave working: a static step, an engine made by
    `__new__` alone, moved names; with stderr closed (the hook's warnings must not become the
    host's OSError). Stdout and the exit status are those without the hook."""
    package = tmp_path / "vllm" / "v1" / "engine"
    package.mkdir(parents=True)
    for d in (tmp_path / "vllm", tmp_path / "vllm" / "v1", package):
        (d / "__init__.py").write_text("")
    (package / "core.py").write_text(ODD_ENGINES[variant])
    driver = tmp_path / "driver.py"
    driver.write_text(ODD_DRIVER)
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR), str(tmp_path)])
    args = [sys.executable, str(driver), str(PACKAGE_DIR), variant]
    plain = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    env["VLLM_ENABLE_PROFILING"] = "1"
    # stderr closed: a warning must not become the host's OSError.
    hooked = subprocess.run(["/bin/sh", "-c", 'exec "$@" 2>&-', "sh", *args], env=env,
                            stdout=subprocess.PIPE, text=True, timeout=60)
    assert hooked.returncode == 0
    assert hooked.stdout == plain.stdout
