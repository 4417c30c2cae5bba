"""Every code example of seed 004 runs as written, with only the import path changed
(`vllm.profiler` became `vllm_profiler`), in both loading modes, and its report files hold the
expected steps and layers.

Mechanism test: `vllm` here is the stand-in package in tests/standin (vLLM's module paths,
class and method names, and a small real torch model on the CPU in place of
`LLM("facebook/opt-125m")`); the package's .pth start-up file is processed as `pip install`
would have it. Where a snippet uses a name it never defines (`sampling_params`,
`model_runner`), the example file defines it in a marked preamble.
"""

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PACKAGE_DIR, ROOT, mode_env, require_module

TORCH = "the stand-in LLM runs a real torch model (bash tests/python_env.sh installs it)"


@pytest.fixture(autouse=True)
def _needs_torch():
    require_module("torch", TORCH)

EXAMPLES = Path(__file__).resolve().parent / "design_examples"
STANDIN = Path(__file__).resolve().parent / "standin"
# What `pip install .` gives at start-up: site-packages' .pth files are processed.
RUNNER = (
    "import runpy, site, sys; site.addsitedir(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
# Decoder layers of the stand-in's LlamaForCausalLM, with vLLM's module names.
LLAMA_LAYERS = ["LlamaForCausalLM", "model", "model.embed_tokens", "model.norm", "lm_head"] + [
    f"model.layers.{i}{leaf}"
    for i in (0, 1)
    for leaf in ["", ".self_attn", ".self_attn.qkv_proj", ".self_attn.o_proj",
                 ".mlp", ".mlp.gate_up_proj", ".mlp.down_proj"]
]


@pytest.fixture(params=["preloaded", "loaded"])
def run_example(request, agent_library, tmp_path):
    def run(script, *args, env_extra=None, timeout=180):
        env = mode_env(request.param, agent_library)
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR), str(STANDIN)])
        env.update(env_extra or {})
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, str(PACKAGE_DIR), str(script), *map(str, args)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, timeout=timeout,
        )
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    return run


def reports(directory: Path) -> dict:
    """The one set of report files in `directory`, by kind."""
    files = sorted(glob.glob(str(directory / "*_*.json")))
    pids = {re.search(r"_(\d+)\.json$", f).group(1) for f in files}
    assert len(pids) == 1, files
    out = {}
    for f in files:
        kind = re.sub(r"_\d+\.json$", "", os.path.basename(f))
        with open(f, encoding="utf-8") as fh:
            out[kind] = json.load(fh)
    return out


def assert_hello_world_steps(found: dict, max_tokens: int = 100) -> None:
    """One request "Hello world" (3 prompt tokens) generating `max_tokens`: one prefill step
    of 3 tokens, then one decode step of 1 token per further token."""
    summary, steps = found["performance_summary"], found["detailed_steps"]["detailed_steps"]
    assert summary["total_steps"] == max_tokens
    assert summary["total_tokens"] == 3 + (max_tokens - 1)
    assert [s["batch_size"] for s in steps] == [1] * max_tokens
    assert [s["num_tokens"] for s in steps] == [3] + [1] * (max_tokens - 1)
    assert [s["step_id"] for s in steps] == list(range(max_tokens))


def test_environment_variables_profile_an_unchanged_script(run_example, tmp_path):
    env = {"VLLM_ENABLE_PROFILING": "1", "VLLM_ENABLE_GPU_MONITORING": "1",
           "VLLM_PROFILING_OUTPUT_DIR": "./profiling_results"}
    run_example(EXAMPLES / "ex1_environment.py", env_extra=env)
    found = reports(tmp_path / "profiling_results")
    assert_hello_world_steps(found)
    assert found["performance_summary"]["layer_performance"] == {}
    assert found["gpu_history"]["detector"] == "CPUDetector"


def test_environment_layer_profiling_hooks_the_loaded_model(run_example, tmp_path):
    env = {"VLLM_ENABLE_PROFILING": "1", "VLLM_ENABLE_LAYER_PROFILING": "1",
           "VLLM_PROFILING_RECORD_SHAPES": "1", "VLLM_PROFILING_OUTPUT_DIR": "./profiling_results"}
    run_example(EXAMPLES / "ex1_environment.py", env_extra=env)
    found = reports(tmp_path / "profiling_results")
    assert_hello_world_steps(found)
    layers = found["performance_summary"]["layer_performance"]
    # One forward per engine step: every module that is called records once per step.
    assert {k: v["call_count"] for k, v in layers.items()} == {k: 100 for k in LLAMA_LAYERS}
    steps = found["detailed_steps"]["detailed_steps"]
    first, second = steps[0]["layer_timings"], steps[1]["layer_timings"]
    assert set(first) == set(LLAMA_LAYERS)
    assert first["model.layers.0.self_attn"]["parent"] == "model.layers.0"
    # Shapes: the prefill runs 3 tokens (hidden 32), a decode step 1 token.
    assert first["model.layers.0.self_attn"]["input_shapes"] == [[1, 3, 32]]
    assert first["model.layers.0.self_attn"]["output_shapes"] == [[1, 3, 32]]
    assert first["model.embed_tokens"]["input_shapes"] == [[1, 3]]
    assert second["lm_head"]["output_shapes"] == [[1, 1, 256]]
    # No CUDA here: no memory delta is made up.
    assert "memory_delta_mb" not in first["model.layers.0"]


def test_enable_and_disable(run_example, tmp_path):
    run_example(EXAMPLES / "ex2_enable_disable.py")
    found = reports(tmp_path / "profiling_results")
    assert_hello_world_steps(found)
    assert found["performance_summary"]["layer_performance"] == {}


def test_context_manager(run_example, tmp_path):
    run_example(EXAMPLES / "ex3_context_manager.py")
    assert_hello_world_steps(reports(tmp_path / "profiling_results"))


def test_decorator(run_example, tmp_path):
    proc = run_example(EXAMPLES / "ex4_decorator.py")
    assert "generated 100 tokens" in proc.stdout
    assert_hello_world_steps(reports(tmp_path / "profiling_results"))


def test_monitor_with_summaries_and_combined_report(run_example, tmp_path):
    proc = run_example(EXAMPLES / "ex6_monitor.py")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("Last 10 steps avg duration: ")]
    assert len(lines) == 10
    with open(tmp_path / "detailed_report.json", encoding="utf-8") as f:
        report = json.load(f)
    summary = report["performance_summary"]
    assert summary["total_steps"] == 100
    assert summary["total_tokens"] == 100 * 100
    steps = report["detailed_steps"]["detailed_steps"]
    assert len(steps) == 100
    assert {(s["batch_size"], s["num_tokens"]) for s in steps} == {(1, 100)}
    # No engine hook was asked for: the engine's own steps are not recorded on top.
    assert summary["total_batch_size"] == 100


def test_gpu_hardware_monitor_against_the_fake_nvml(run_example, fake_nvml, tmp_path):
    proc = run_example(EXAMPLES / "ex7_gpu_hardware.py", env_extra=fake_gpu_env(fake_nvml, tmp_path))
    assert "GPU Utilization: 42.0%" in proc.stdout
    assert "Memory Utilization: 25.0%" in proc.stdout
    assert "Temperature: 61.0°C" in proc.stdout
    history = re.search(r"history: (\d+) samples of device \[(.*)\]", proc.stdout)
    assert int(history.group(1)) >= 1 and history.group(2) == "0"


def test_max_history_size_bounds_the_kept_steps(run_example, tmp_path):
    run_example(EXAMPLES / "ex8_max_history.py")
    found = reports(tmp_path / "profiling_results")
    assert found["performance_summary"]["total_steps"] == 5
    assert [s["step_id"] for s in found["detailed_steps"]["detailed_steps"]] == [2, 3, 4]


def test_custom_metrics_class(run_example, fake_nvml, tmp_path):
    proc = run_example(EXAMPLES / "ex9_custom_metrics.py", env_extra=fake_gpu_env(fake_nvml, tmp_path))
    assert "CustomGPUMetrics custom_metric=0.0 gpu_utilization=42.0" in proc.stdout


def test_step_callback_posts_every_step(run_example, tmp_path):
    proc = run_example(EXAMPLES / "ex10_callback.py")
    posted = json.loads(proc.stdout.split("POSTED ", 1)[1])
    url = "http://your-monitoring-system/api/metrics"
    assert posted == [[url, i, i + 1, 3 * (i + 1)] for i in range(5)]


def test_the_dedicated_monitoring_script(run_example, tmp_path):
    proc = run_example(
        ROOT / "examples" / "gpu_profiling_example.py", "--model", "facebook/opt-125m",
        "--mode", "detailed", "--num-prompts", "100", "--enable-detailed-profiling",
        "--output-dir", "./detailed_profiling",
    )
    found = reports(tmp_path / "detailed_profiling")
    summary = found["performance_summary"]
    # 100 prompts of 6 or 7 tokens, 16 tokens each, at most 8 running: 13 waves of 16 steps
    # (the last wave of 4 requests too).
    assert summary["total_steps"] == 13 * 16
    assert "100 prompts, 1600 tokens generated" in proc.stdout
    assert {k: v["call_count"] for k, v in summary["layer_performance"].items()} == {
        k: 13 * 16 for k in LLAMA_LAYERS
    }
    assert "slowest layers" in proc.stdout


def fake_gpu_env(fake_nvml: Path, tmp_path: Path) -> dict:
    script = tmp_path / "nvml.json"
    script.write_text(json.dumps({"devices": [{
        "name": "Fake H100", "uuid": "GPU-0", "memory_total_mb": 80000,
        "frames": [{"gpu_utilization": 42, "memory_controller_utilization": 7, "memory_used_mb": 20000, "temperature": 61,
                    "power_draw_mw": 300000}],
    }]}))
    return {"VLLM_PROFILING_NVML_LIBRARY": str(fake_nvml), "FAKE_NVML_SCRIPT": str(script)}
