"""P11: what one Prometheus endpoint for a host's processes costs (issue 16).

Arms, in one run: an endpoint of 1 profiled process, and of 4 (VLLM_PROFILING_PROMETHEUS_ADDR
set for all; one serves, the others publish their figures to the runtime dir every second).
Every process records a step every 10 ms, on the fake NVML. Figures:
- scrape_ms: median and p90 of a full GET /metrics (OpenMetrics) from the serving process,
  `scrapes` times, 1 process vs 4 (the server reads the others' files, at most every 0.5 s);
- publish_cpu_ms_per_s: CPU time of a non-serving member's `vprof-metrics` thread per second
  of wall time over `seconds` (a snapshot, a file write and a rename per second, the lock
  tried every 250 ms).
Prints one JSON object.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MEMBER = """
import sys, threading, time
from vllm_profiler import _native
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
monitor = VLLMPerformanceMonitor()
done = threading.Event()
def record():
    while not done.is_set():
        with monitor.profile_inference_step(batch_size=1, num_tokens=4):
            time.sleep(0.01)
recorder = threading.Thread(target=record)
recorder.start()
print("ready", flush=True)
sys.stdin.readline()
done.set()
recorder.join()
"""

SCRIPT = {"devices": [{"name": "Bench GPU", "uuid": "GPU-bench", "memory_total_mb": 8192,
                       "frames": [{"gpu_utilization": 50, "memory_used_mb": 1024,
                                   "temperature": 50, "power_draw_mw": 100000,
                                   "processes": [{"pid": "self", "used_memory_mb": 512}]}]}]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_ticks(pid, name):
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as f:
            if f.read().strip() != name:
                continue
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    raise SystemExit(f"metrics_group: no {name} thread in {pid}")


def listening_pid(port, pids):
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":%04X" % port) and fields[3] == "0A":
                inodes.add(fields[9])
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    raise SystemExit(f"metrics_group: nobody listens on {port}")


def arm(members, scrapes, seconds, tmp):
    port = free_port()
    script = os.path.join(tmp, "nvml.json")
    with open(script, "w") as f:
        json.dump(SCRIPT, f)
    runtime = tempfile.mkdtemp(dir=tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.update({
        "LD_PRELOAD": os.environ["VLLM_PROFILER_LIBRARY"],
        "VLLM_ENABLE_PROFILING": "1",
        "VLLM_PROFILING_OUTPUT_DIR": os.path.join(tmp, "out"),
        "VLLM_PROFILING_PROMETHEUS_ADDR": f"127.0.0.1:{port}",
        "VLLM_PROFILING_RUNTIME_DIR": runtime,
        "VLLM_PROFILING_NVML_LIBRARY": os.environ["FAKE_NVML_LIBRARY"],
        "FAKE_NVML_SCRIPT": script,
        "PYTHONPATH": os.path.join(ROOT, "python"),
    })
    procs = [subprocess.Popen([sys.executable, "-c", MEMBER], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(members)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("metrics_group: a member did not start")
        url = f"http://127.0.0.1:{port}/metrics"
        request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
        deadline = time.monotonic() + 30
        while True:  # until every member's series are served
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    if r.read().decode().count("vllm_profiler_steps_total{") == members:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("metrics_group: the endpoint never served every member")
            time.sleep(0.1)
        times = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=5) as r:
                r.read()
            times.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.01)
        result = {"members": members, "scrape_ms_median": statistics.median(times),
                  "scrape_ms_p90": sorted(times)[int(0.9 * (len(times) - 1))]}
        if members > 1:
            server = listening_pid(port, [p.pid for p in procs])
            member = next(p.pid for p in procs if p.pid != server)
            hz = os.sysconf("SC_CLK_TCK")
            before, t0 = thread_ticks(member, "vprof-metrics"), time.monotonic()
            time.sleep(seconds)
            ticks = thread_ticks(member, "vprof-metrics") - before
            wall = time.monotonic() - t0
            result["publish_cpu_ms_per_s"] = ticks / hz * 1e3 / wall
            # The kernel counts CPU time in ticks: under one tick in the window reads 0.
            result["publish_cpu_resolution_ms_per_s"] = 1e3 / hz / wall
        return result
    finally:
        for p in procs:
            try:
                p.communicate(input="\n", timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    scrapes, seconds = (20, 2) if args.smoke else (300, 30)
    with tempfile.TemporaryDirectory() as tmp:
        alone = arm(1, scrapes, seconds, tmp)
        four = arm(4, scrapes, seconds, tmp)
    print(json.dumps({"smoke": args.smoke, "scrapes": scrapes, "seconds": seconds,
                      "alone": alone, "four": four,
                      "scrape_ratio": four["scrape_ms_median"] / alone["scrape_ms_median"]}))


if __name__ == "__main__":
    main()
