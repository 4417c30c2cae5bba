"""Prints where a run's reports are and their headline numbers.

Usage: python3 examples/show_report.py DIR
"""

import glob
import json
import os
import sys


def fmt(value, unit="", digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def main():
    out = sys.argv[1]
    summaries = sorted(glob.glob(os.path.join(out, "performance_summary_*.json")))
    if not summaries:
        sys.exit(f"no performance_summary_*.json in {out}")
    print(f"\nReports in {os.path.abspath(out)}:")
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        print(f"  {os.path.basename(path)}  ({os.path.getsize(path)} bytes)")
    for path in summaries:
        pid = path.rsplit("_", 1)[1].split(".")[0]
        with open(path) as f:
            s = json.load(f)
        c = s["counters"]
        print(f"\nProcess {pid}")
        print(f"  steps            {s['total_steps']} ({c['kept_steps']} kept, {c['dropped_steps']} dropped, {c['lost_events']} lost)")
        print(
            "  step duration    avg {} | p50 {} | p90 {} | p99 {} | min {} | max {}".format(
                *(fmt(s[k], " ms") for k in (
                    "avg_duration_ms", "p50_duration_ms", "p90_duration_ms",
                    "p99_duration_ms", "min_duration_ms", "max_duration_ms"))
            )
        )
        print(f"  throughput       {fmt(s['tokens_per_second'], ' tokens/s', 0)} ({s['total_tokens']} tokens in {fmt(s['window_seconds'], ' s')})")
        print(f"  memory           avg {fmt(s['avg_memory_mb'], ' MB', 1)} | max {fmt(s['max_memory_mb'], ' MB', 1)} (source: {s['memory_source']})")
        layers = sorted(s["layer_performance"].items(), key=lambda kv: -kv[1]["total_duration_ms"])
        if layers:
            print("  top layers by total time:")
            for name, l in layers[:8]:
                print(f"    {name:32s} {l['total_duration_ms']:9.1f} ms total  {l['avg_duration_ms']:8.3f} ms avg  x{l['call_count']}")
        history = os.path.join(out, f"gpu_history_{pid}.json")
        if os.path.exists(history):
            with open(history) as f:
                h = json.load(f)
            cpu = [x["process_cpu_percent"] for x in h["host_history"] if x["process_cpu_percent"] is not None]
            print(
                f"  samples          {len(h['gpu_history'])} GPU, {len(h['host_history'])} host "
                f"(detector {h['detector']}, every {h['sample_interval_s']} s)"
                + (f"; process CPU avg {sum(cpu) / len(cpu):.0f}%" if cpu else "")
            )


if __name__ == "__main__":
    main()
