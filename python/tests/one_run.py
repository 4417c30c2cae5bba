"""What holds of one server run's reports in the real vLLM tests: `report` groups its processes
by role, and `trace` merges their traces (checked here and in speedscope)."""

import json
import subprocess
import time

from test_dashboard import FULL_GPU
from test_trace_consumer import assert_nested, load_in_speedscope


def check_one_run(cli, out, engine, worker, tmp_path, speedscope):
    """The server's processes are one run: `report` groups them by role, and `trace` merges
    their traces on the Unix clock, named by role, nested on each thread, each device once."""
    report = subprocess.run([cli, "report", str(out), "--json"], capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    (group,) = json.loads(report.stdout)["runs"]
    assert [(p["pid"], p["label"]) for p in group["processes"]] == [
        (engine, "engine_core"), (worker, "worker rank 0")]
    assert len({p["summary"]["run_id"] for p in group["processes"]}) == 1
    assert group["processes"][1]["summary"]["parent_pid"] == engine
    assert [g["uuid"] for g in group["gpus"]] == [FULL_GPU["devices"][0]["uuid"]]
    merged_path = tmp_path / "run.json"
    merged = subprocess.run([cli, "trace", str(out), "-o", str(merged_path)],
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    trace = json.loads(merged_path.read_text())
    events = trace["traceEvents"]
    names = sorted((e["pid"], e["args"]["name"]) for e in events
                   if e["ph"] == "M" and e["name"] == "process_name")
    assert names == sorted([(0, "GPUs"), (engine, "engine_core"), (worker, "worker rank 0")])
    started = trace["otherData"]["started_unix"]
    steps = [e for e in events if e["ph"] == "X" and e.get("cat") == "step"]
    assert {e["pid"] for e in steps} == {engine, worker}
    # On the Unix clock: within the run's wall-clock time.
    assert all(started * 1e6 <= e["ts"] <= time.time() * 1e6 for e in steps)
    assert all(isinstance(e["args"]["batch_size"], int) for e in steps)
    assert_nested(events)
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {"GPU 0 utilization (%)", "GPU 0 memory used (MiB)",
                        "GPU 0 temperature (°C)", "GPU 0 power (W)"}
    assert {e["pid"] for e in events if e["ph"] == "C"} == {0}
    # And in the consumer: one profile per process and thread, nothing crossing.
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    process = dict(names)
    recorded = {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"}
    listed, console = load_in_speedscope(speedscope, merged_path)
    assert sorted(listed) == sorted(f"{process[pid]} (pid {pid}), {threads[(pid, tid)]} (tid {tid})"
                                    for pid, tid in recorded)
    assert console == [], console

