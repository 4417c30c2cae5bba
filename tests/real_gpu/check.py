#!/usr/bin/env python3
"""The real-GPU check of issue 17: the agent's figures against the NVIDIA tools' own, on one
short GPU load. Run it where an NVIDIA GPU and driver exist:

    cargo build --release -p vllm-profiler-agent
    python3 tests/real_gpu/check.py [--library target/release/libvllm_profiler.so] [--seconds 8]

It preloads the agent into a child Python that keeps device 0 busy (torch matmuls when torch
has CUDA, else idle), and meanwhile reads `nvidia-smi dmon` for the GPM fields. Then it
compares, per level:

- level 1 (GPU hardware): the agent's last sample against `nvidia-smi --query-gpu` read in
  the same second: memory total exactly, memory used within 5 %, temperature within 3 °C,
  power within 15 %;
- GPM: the agent's mean `sm_active_percent`, `sm_occupancy_percent`, `tensor_active_percent`
  and `dram_bandwidth_percent` over the load against `dmon`'s means, within 15 points. Where
  GPM is refused (a sandbox, an older GPU), the line says "unsupported" with the error: that
  counts as run;
- level 2 (kernels, `VLLM_PROFILING_KERNELS=1`): 20 steps of a small loop traced by the agent,
  the same 20 under torch's profiler with CUDA activity (the agent releases CUPTI for it), then
  20 more traced again: every traced step has the kernel count torch's list gives per
  iteration, and every name of our steps' top kernels is in torch's list. Where CUPTI is
  refused, "unsupported" with the agent's warning;
- level 3 (torch ops, `VLLM_PROFILING_TORCH_OPS=1`, windows of 2 steps every 4): 12 steps of
  two 4096-wide half-precision linears with layer hooks timed by CUDA events: 3 windows,
  each op with device time, the window's kernels in the kernel level, and the torch profiler's
  CUDA time per `aten::linear` call against our `avg_gpu_duration_ms` of `model.0` (the same
  linear) within 25 %.

Each line says PASS, FAIL, UNSUPPORTED or SKIP with the figures; the exit code is 1 if any
check failed. Without `nvidia-smi` it prints one SKIP line with the reason and exits 0, or 3
with `--require-gpu` (so that a run meant to be on a GPU cannot pass as a skip).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GPM_FIELDS = {  # nvidia-smi dmon --gpm-metrics id -> our field
    2: "sm_active_percent",
    3: "sm_occupancy_percent",
    5: "tensor_active_percent",
    10: "dram_bandwidth_percent",
}
LOAD = r"""
import sys, time
seconds = float(sys.argv[1])
try:
    import torch
    assert torch.cuda.is_available()
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    print("load: torch matmuls", file=sys.stderr)
except Exception as err:  # no torch or no CUDA: the GPU idles, figures still compare
    print(f"load: idle ({err!r})", file=sys.stderr)
    time.sleep(seconds)
"""

# Level 2: STEPS steps of the same small decode-like loop, traced by the agent; then the same
# STEPS under torch's profiler with CUDA activity (the agent steps aside for it, and takes
# CUPTI back after). Prints torch's kernel counts as one JSON line.
KERNEL_LOAD = r"""
import ctypes, json, sys
import torch
from torch.profiler import profile, ProfilerActivity
steps = int(sys.argv[1])
agent = ctypes.CDLL(None)  # the preloaded agent's symbols
agent.vllm_profiler_step_begin.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
agent.vllm_profiler_step_begin.restype = ctypes.c_uint64
agent.vllm_profiler_step_end.argtypes = [ctypes.c_uint64]
agent.vllm_profiler_step_end.restype = ctypes.c_int32
x = torch.randn(64, 4096, device="cuda", dtype=torch.float16)
w = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
def body():
    y = torch.relu(x @ w)
    return (y * 2).sum()
for _ in range(5):
    body()
torch.cuda.synchronize()
for _ in range(steps):
    handle = agent.vllm_profiler_step_begin(64, 64)
    body()
    torch.cuda.synchronize()
    agent.vllm_profiler_step_end(handle)
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(steps):
        body()
    torch.cuda.synchronize()
counts = {}
for event in prof.events():
    time = getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0))
    if str(event.device_type).endswith("CUDA") and time > 0:
        counts[event.name] = counts.get(event.name, 0) + 1
for _ in range(steps):  # CUPTI is ours again
    handle = agent.vllm_profiler_step_begin(64, 64)
    body()
    torch.cuda.synchronize()
    agent.vllm_profiler_step_end(handle)
print(json.dumps(counts))
"""
KERNEL_STEPS = 20

# Level 3: torch-op windows (2 steps of every 4) over 12 steps of two linears, with layer
# hooks timing each module on the device.
TORCH_OP_LOAD = r"""
import torch
from vllm_profiler import VLLMPerformanceMonitor, integration
from vllm_profiler.layers import LayerProfiler
integration.enable_vllm_profiling(enable_gpu_monitoring=False, enable_torch_op_profiling=True)
model = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
                            torch.nn.Linear(4096, 4096)).cuda().half()
x = torch.randn(64, 4096, device="cuda", dtype=torch.float16)
with torch.no_grad():
    for _ in range(5):
        model(x)
    LayerProfiler(model).attach()
    monitor = VLLMPerformanceMonitor()
    for _ in range(12):
        with monitor.profile_inference_step(64, 64):
            model(x)
            torch.cuda.synchronize()
integration.disable_vllm_profiling()
"""

results: list[tuple[str, str, str]] = []


def report(level: str, verdict: str, detail: str) -> None:
    results.append((level, verdict, detail))
    print(f"{verdict:11} {level}: {detail}", flush=True)


def query_gpu() -> dict[str, float]:
    fields = "memory.total,memory.used,temperature.gpu,power.draw"
    out = subprocess.run(
        ["nvidia-smi", "-i", "0", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    row = next(csv.reader([out.strip()]))
    return dict(zip(fields.split(","), (float(v) if v.strip() not in ("[N/A]", "N/A") else float("nan") for v in row)))


def parse_dmon(text: str) -> dict[str, list[float]]:
    """`nvidia-smi dmon` prints a '# gpu ...' header naming its columns, then rows."""
    columns: list[str] = []
    values: dict[str, list[float]] = {}
    for line in text.splitlines():
        if line.startswith("# gpu") or line.startswith("#gpu"):
            columns = line.lstrip("#").split()
            continue
        if line.startswith("#") or not columns:
            continue
        for name, cell in zip(columns, line.split()):
            try:
                values.setdefault(name, []).append(float(cell))
            except ValueError:
                pass
    return values


def check_kernels(library: Path) -> None:
    """Level 2: the kernels of each of our steps against torch's profiler's kernel list for the
    same loop: the same names, and per step the same count."""
    out = Path(tempfile.mkdtemp(prefix="real-gpu-kernels-"))
    env = dict(os.environ, LD_PRELOAD=str(library), VLLM_ENABLE_PROFILING="1",
               VLLM_PROFILING_OUTPUT_DIR=str(out), VLLM_PROFILING_KERNELS="1")
    done = subprocess.run([sys.executable, "-c", KERNEL_LOAD, str(KERNEL_STEPS)], env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        report("level 2", "FAIL", f"the kernel load exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    summaries = sorted(out.glob("performance_summary_*.json"))
    steps_files = sorted(out.glob("detailed_steps_*.json"))
    if not summaries or not steps_files:
        report("level 2", "FAIL", f"no reports in {out}")
        return
    summary = json.loads(summaries[0].read_text())
    if summary.get("kernel_performance") is None:
        report("level 2", "UNSUPPORTED", f"no kernel records; agent said: {done.stderr.strip()[-300:]}")
        return
    steps = json.loads(steps_files[0].read_text())["detailed_steps"]
    # The steps before the torch profiler and those after it (CUPTI taken back).
    traced = [s for s in steps if s.get("batch_size") == 64]
    per_step_theirs = sum(theirs.values()) / KERNEL_STEPS
    counts = sorted({s["kernel_count"] for s in traced})
    ok = len(traced) == 2 * KERNEL_STEPS and counts == [per_step_theirs]
    report("level 2", "PASS" if ok else "FAIL",
           f"kernels per step: ours {counts} over {len(traced)} steps, torch profiler {per_step_theirs}")
    ours_names = {k["name"] for s in traced for k in (s.get("top_kernels") or [])}
    missing = ours_names - set(theirs)
    report("level 2", "FAIL" if missing else "PASS",
           f"kernel names: ours {sorted(ours_names)[:6]}, not in torch's list: {sorted(missing)[:6]}")


def check_torch_ops(library: Path) -> None:
    """Level 3: the torch profiler's windows on a GPU carry device time and kernels, and its
    CUDA time per linear agrees with our layer's device time."""
    out = Path(tempfile.mkdtemp(prefix="real-gpu-torch-ops-"))
    env = dict(os.environ, VLLM_PROFILER_LIBRARY=str(library), VLLM_PROFILING_OUTPUT_DIR=str(out),
               VLLM_PROFILING_TORCH_OP_EVERY="4", VLLM_PROFILING_TORCH_OP_STEPS="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "python"),
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("LD_PRELOAD", None)
    done = subprocess.run([sys.executable, "-c", TORCH_OP_LOAD], env=env, capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        report("level 3", "FAIL", f"the torch-op load exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return
    summaries = sorted(out.glob("performance_summary_*.json"))
    if not summaries:
        report("level 3", "FAIL", f"no reports in {out}")
        return
    summary = json.loads(summaries[0].read_text())
    windows = summary.get("torch_op_windows") or []
    ops = summary.get("torch_op_performance") or {}
    report("level 3", "PASS" if [w["steps"] for w in windows] == [2, 2, 2] else "FAIL",
           f"windows: {[w['steps'] for w in windows]} (want [2, 2, 2]); stderr: {done.stderr.strip()[-200:]}")
    linear = ops.get("aten::linear") or {}
    device_ms = linear.get("device_time_ms")
    if not device_ms:
        report("level 3", "UNSUPPORTED", f"no device time from the torch profiler: {linear}")
        return
    kernels = summary.get("kernel_performance") or {}
    report("level 3", "PASS" if kernels else "FAIL",
           f"window kernels in kernel_performance: {sorted(kernels)[:4]}")
    theirs = device_ms / linear["call_count"]
    ours = (summary["layer_performance"].get("model.0") or {}).get("avg_gpu_duration_ms")
    ok = ours is not None and abs(ours - theirs) <= 0.25 * theirs
    report("level 3", "PASS" if ok else "FAIL",
           f"aten::linear CUDA time per call: torch profiler {theirs:.4f} ms, ours (model.0 "
           f"gpu_duration) {ours} ms (±25 %)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", default=str(ROOT / "target/release/libvllm_profiler.so"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--require-gpu", action="store_true")
    args = parser.parse_args()

    if shutil.which("nvidia-smi") is None or subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True
    ).returncode != 0:
        report("all", "SKIP", "no working nvidia-smi: no NVIDIA GPU or driver on this machine")
        return 3 if args.require_gpu else 0
    library = Path(args.library)
    if not library.is_file():
        report("all", "FAIL", f"no agent library at {library}: cargo build --release -p vllm-profiler-agent")
        return 1

    out = Path(tempfile.mkdtemp(prefix="real-gpu-check-"))
    env = dict(os.environ, LD_PRELOAD=str(library), VLLM_ENABLE_PROFILING="1",
               VLLM_PROFILING_OUTPUT_DIR=str(out), VLLM_PROFILING_SAMPLE_INTERVAL="0.2")
    dmon = subprocess.Popen(
        ["nvidia-smi", "dmon", "-i", "0", "-d", "1", "-c", str(int(args.seconds)),
         "--gpm-metrics", ",".join(str(i) for i in GPM_FIELDS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(args.seconds)], env=env,
                            stderr=subprocess.PIPE, text=True)
    smi_during = None
    try:
        load.wait(timeout=args.seconds / 2)
    except subprocess.TimeoutExpired:
        smi_during = query_gpu()
    _, load_err = load.communicate(timeout=args.seconds * 4 + 60)
    dmon_out, _ = dmon.communicate(timeout=args.seconds * 4 + 60)
    print(load_err.strip(), flush=True)
    if load.returncode != 0:
        report("all", "FAIL", f"the profiled load exited {load.returncode}")
        return 1

    history = json.loads(next(out.glob("gpu_history_*.json")).read_text())
    samples = [s for s in history["gpu_history"] if s["device_id"] == 0]
    if history["detector"] != "NVMLDetector" or not samples:
        report("level 1", "FAIL", f"detector {history['detector']}, {len(samples)} samples of device 0")
        return 1

    # Level 1: the sample nearest the middle of the load against nvidia-smi then.
    if smi_during is None:
        report("level 1", "FAIL", "the load ended before nvidia-smi could be read")
    else:
        s = samples[len(samples) // 2]
        checks = [
            ("memory total MiB", s["memory_total_mb"], smi_during["memory.total"], 0.5),
            ("memory used MiB", s["memory_used_mb"], smi_during["memory.used"], 0.05 * smi_during["memory.total"]),
            ("temperature °C", s["temperature"], smi_during["temperature.gpu"], 3.0),
            ("power W", s["power_draw"], smi_during["power.draw"], 0.15 * max(smi_during["power.draw"], 50.0)),
        ]
        for name, ours, theirs, tolerance in checks:
            ok = ours is not None and abs(ours - theirs) <= tolerance
            report("level 1", "PASS" if ok else "FAIL", f"{name}: ours {ours}, nvidia-smi {theirs} (±{tolerance:.1f})")

    # GPM: means over the load.
    dmon_values = parse_dmon(dmon_out)
    if dmon.returncode != 0 or not dmon_values:
        report("GPM", "UNSUPPORTED", f"nvidia-smi dmon --gpm-metrics: {dmon_out.strip()[:300]}")
    # dmon appends the GPM columns, in the order asked, after its default ones.
    theirs_columns = [c for c in dmon_values if c not in ("gpu", "Idx")][-len(GPM_FIELDS):]
    print(f"dmon columns taken for GPM: {theirs_columns}", flush=True)
    for position, (metric_id, field) in enumerate(GPM_FIELDS.items()):
        ours = [s[field] for s in samples if s.get(field) is not None]
        if not ours:
            report("GPM", "UNSUPPORTED", f"{field}: the agent got none (NVML GPM refused or absent)")
            continue
        if position >= len(theirs_columns):
            report("GPM", "UNSUPPORTED", f"{field}: ours mean {statistics.mean(ours):.1f}, dmon gave no column")
            continue
        theirs = dmon_values[theirs_columns[position]]
        a, b = statistics.mean(ours), statistics.mean(theirs)
        verdict = "PASS" if abs(a - b) <= 15.0 else "FAIL"
        report("GPM", verdict, f"{field} (dmon {theirs_columns[position]}, id {metric_id}): ours mean {a:.1f}, dmon mean {b:.1f}")

    check_kernels(library)
    check_torch_ops(library)
    return 1 if any(v == "FAIL" for _, v, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
