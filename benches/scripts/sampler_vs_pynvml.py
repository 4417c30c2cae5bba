"""P4: the agent's GPU sampler against a pynvml polling loop, CPU time per sample per device,
both reading the same fake NVML (crates/fake-nvml, scripted through FAKE_NVML_SCRIPT).

- ours: a child Python process loads libvllm_profiler.so (VLLM_PROFILER_LIBRARY), enables it
  with a 1 ms sample interval and VLLM_PROFILING_NVML_LIBRARY=<fake>, sleeps N seconds, then
  reads the CPU time of its `vprof-sampler` thread from /proc/self/task/<tid>/schedstat (ns;
  utime+stime from .../stat too, in clock ticks) and divides by the samples taken (kept GPU
  samples plus dropped ones, from the agent's GPU history), per device. The sampler's tick
  also reads the host (/proc), once per tick whatever the device count: included.
- pynvml: seed 000's GPUMonitor.get_metrics() style loop (utilization, memory info) plus
  temperature and power like our sampler reads, through the official nvidia-ml-py bindings
  pointed at the fake (pynvml.nvmlLib set to it before nvmlInit), CPU time per sample by
  time.thread_time(), twice: paced at the same 1 ms interval as ours (the figure compared),
  and a tight loop with no sleep (the reads alone).

Needs: cargo build --release -p vllm-profiler-agent -p fake-nvml; PYTHONPATH=python.
Prints one JSON object.
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_RATIO = 30.0


def script(devices):
    return {
        "devices": [
            {
                "name": f"Fake GPU {i}",
                "uuid": f"GPU-{i}",
                "memory_total_mb": 81920,
                "frames": [
                    {
                        "gpu_utilization": 37 + i,
                        "memory_controller_utilization": 5,
                        "memory_used_mb": 20480,
                        "temperature": 51,
                        "power_draw_mw": 123500,
                        "power_limit_mw": 700000,
                        "sm_clock_mhz": 1980,
                        "memory_clock_mhz": 2619,
                    }
                ],
            }
            for i in range(devices)
        ]
    }


def sampler_thread_cpu():
    """(schedstat ns, stat ticks) of this process's vprof-sampler thread, or None."""
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                if f.read().strip() != "vprof-sampler":
                    continue
            with open(f"{base}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            ns = None
            try:
                with open(f"{base}/schedstat") as f:
                    ns = int(f.read().split()[0])
            except OSError:
                pass
            return ns, ticks
        except (OSError, ValueError):
            continue
    return None


def agent_child(seconds, devices):
    """Runs in the child: the agent samples for `seconds`; prints its figures as JSON."""
    from vllm_profiler import _native

    _native.enable(
        {"sample_interval": 0.001, "max_history": 1_000_000, "enable_gpu_monitoring": True}
    )
    deadline = time.monotonic() + 10
    while sampler_thread_cpu() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # Wait for the first sample (detection done), then measure from there.
    # (Only recent samples are asked for: the whole history, growing every millisecond, can
    # outgrow the buffer between the size query and the read, again and again.)
    while time.monotonic() < deadline and not _native.gpu_history(0, time.time() - 0.05).get(
        "gpu_history"
    ):
        time.sleep(0.005)
    w0 = time.time()
    before = sampler_thread_cpu()
    t0 = time.monotonic()
    time.sleep(seconds)
    after = sampler_thread_cpu()
    elapsed = time.monotonic() - t0
    w1 = time.time()
    # Counted after the CPU snapshot, from the report that stopping the agent writes.
    _native.disable()
    with open(os.path.join(os.environ["VLLM_PROFILING_OUTPUT_DIR"],
                           f"gpu_history_{os.getpid()}.json")) as f:
        history = json.load(f)
    ticks = sum(1 for s in history["gpu_history"]
                if s["device_id"] == 0 and w0 <= s["timestamp"] <= w1)
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    out = {
        "detector": history.get("detector"),
        "devices": len(history.get("devices", [])),
        "elapsed_s": elapsed,
        "ticks": ticks,
        "sampler_cpu_ns": after[0] - before[0] if after[0] is not None else None,
        "sampler_cpu_stat_ns": (after[1] - before[1]) * 1e9 / ticks_per_s,
    }
    print(json.dumps(out))


def pynvml_loop(fake, seconds, devices, interval):
    import pynvml

    pynvml.nvmlLib = ctypes.CDLL(fake)
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    assert len(handles) == devices, handles

    def get_metrics(h):  # seed 000's GPUMonitor.get_metrics(), plus temperature and power
        util = pynvml.nvmlDeviceGetUtilizationRates(h)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        return {
            "gpu_util_percent": float(util.gpu),
            "memory_util_percent": mem.used / mem.total * 100.0,
            "memory_used_mb": mem.used // (1024 * 1024),
            "memory_total_mb": mem.total // (1024 * 1024),
            "memory_free_mb": mem.free // (1024 * 1024),
            "temperature": float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            "power_draw": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
        }

    history = []
    samples = 0
    c0 = time.thread_time_ns()
    now = time.monotonic()
    t_end = now + seconds
    next_tick = now
    while now < t_end:
        for h in handles:
            history.append(get_metrics(h))
        samples += 1
        if len(history) > 10_000:
            del history[:5_000]
        if interval:
            next_tick += interval
            now = time.monotonic()
            if next_tick > now:
                time.sleep(next_tick - now)
        now = time.monotonic()
    cpu = time.thread_time_ns() - c0
    pynvml.nvmlShutdown()
    return {"samples": samples, "cpu_ns": cpu, "per_sample_per_device_ns": cpu / samples / devices}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.smoke else 5.0)
    if args.child:
        agent_child(seconds, args.devices)
        return

    fake = os.environ.get("FAKE_NVML_LIBRARY") or os.path.join(
        ROOT, "target/release/libfake_nvml.so"
    )
    agent = os.environ.get("VLLM_PROFILER_LIBRARY") or os.path.join(
        ROOT, "target/release/libvllm_profiler.so"
    )
    with tempfile.TemporaryDirectory(prefix="p4-") as tmp:
        script_path = os.path.join(tmp, "nvml.json")
        with open(script_path, "w") as f:
            json.dump(script(args.devices), f)
        os.environ["FAKE_NVML_SCRIPT"] = script_path
        env = dict(os.environ)
        env.update(
            {
                "VLLM_PROFILER_LIBRARY": agent,
                "VLLM_PROFILING_NVML_LIBRARY": fake,
                "VLLM_PROFILING_OUTPUT_DIR": tmp,
                "PYTHONPATH": os.path.join(ROOT, "python")
                + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
            }
        )
        env.pop("VLLM_ENABLE_PROFILING", None)
        env.pop("LD_PRELOAD", None)
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--seconds", str(seconds),
             "--devices", str(args.devices)],
            env=env, capture_output=True, text=True, timeout=seconds + 60,
        )
        if child.returncode != 0:
            sys.exit(f"sampler_vs_pynvml: agent child failed:\n{child.stderr}")
        ours = json.loads(child.stdout.strip().splitlines()[-1])
        theirs = pynvml_loop(fake, seconds, args.devices, 0.001)
        tight = pynvml_loop(fake, min(seconds, 2.0), args.devices, 0.0)

    cpu = ours["sampler_cpu_ns"] if ours["sampler_cpu_ns"] is not None else ours["sampler_cpu_stat_ns"]
    ours_per = cpu / ours["ticks"] / args.devices
    ratio = theirs["per_sample_per_device_ns"] / ours_per
    out = {
        "id": "P4",
        "devices": args.devices,
        "seconds": seconds,
        "ours_detector": ours["detector"],
        "ours_ticks": ours["ticks"],
        "ours_cpu_source": "schedstat" if ours["sampler_cpu_ns"] is not None else "stat",
        "ours_cpu_ns": cpu,
        "ours_cpu_stat_ns": ours["sampler_cpu_stat_ns"],
        "ours_per_sample_per_device_ns": round(ours_per, 1),
        "pynvml_samples": theirs["samples"],
        "pynvml_per_sample_per_device_ns": round(theirs["per_sample_per_device_ns"], 1),
        "pynvml_mode": "paced at 1 ms like ours (sleep between samples)",
        "pynvml_tight_per_sample_per_device_ns": round(tight["per_sample_per_device_ns"], 1),
        "ratio_vs_tight": round(tight["per_sample_per_device_ns"] / ours_per, 2),
        "ratio": round(ratio, 2),
        "target": f"ours >= {TARGET_RATIO:.0f}x cheaper",
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
