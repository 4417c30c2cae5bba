#!/usr/bin/env python3
"""Before and after in one run: the criterion benches of two checkouts, interleaved.

    python3 benches/scripts/compare_commits.py --before ../before [--rounds 3] [--benches a,b]

`--before` is a second checkout (a `git worktree` of the parent commit, say); the checkout this
script stands in is "after". Each round runs every bench in the before tree, then the same bench
in this one, so that a slow minute of the machine falls on both. Each tree builds into its own
target dir (`<tree>/target`). The table gives, per benchmark, the median of the rounds' medians
(ns) on each side, their ratio, and the spread of the rounds (max/min of the medians, the larger
side's), which is the figure a ratio must exceed before it means anything.

It fails (exit 1) when a bench does not build or run on either side, or when a benchmark of one
side has no figure on the other: a comparison with a hole in it is not a comparison.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AFTER = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_BENCHES = ["c_abi", "step_overhead", "export", "journal", "gpu_sampler"]


def medians(criterion_dir, since):
    """{benchmark id: median ns} of the estimates.json under a criterion dir written since."""
    found = {}
    for root, _dirs, files in os.walk(criterion_dir):
        if "estimates.json" in files and os.path.basename(root) == "new":
            path = os.path.join(root, "estimates.json")
            if os.path.getmtime(path) < since:
                continue  # another bench's, from an earlier run
            ident = os.path.relpath(os.path.dirname(root), criterion_dir)
            with open(path) as f:
                found[ident] = json.load(f)["median"]["point_estimate"]
    return found


def run_bench(tree, bench, args):
    target = os.path.join(tree, "target")
    criterion = os.path.join(target, "criterion")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    env.pop("VLLM_ENABLE_PROFILING", None)
    for key in ("LD_PRELOAD", "VLLM_PROFILER_LIBRARY", "FAKE_NVML_LIBRARY"):
        env.pop(key, None)
    cmd = ["cargo", "bench", "--bench", bench, "--", *args]
    started = time.time()
    result = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:])
        raise SystemExit(f"compare_commits: `{' '.join(cmd)}` failed in {tree}")
    return medians(criterion, started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--benches", default=",".join(DEFAULT_BENCHES))
    parser.add_argument("--measurement-time", default="3")
    parser.add_argument("--warm-up-time", default="1")
    opts = parser.parse_args()
    before = os.path.abspath(opts.before)
    crit = ["--warm-up-time", opts.warm_up_time, "--measurement-time", opts.measurement_time]
    benches = [b for b in opts.benches.split(",") if b]
    # Build both first (release library and fake NVML too: the C ABI bench loads them).
    for tree in (before, AFTER):
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(tree, "target"))
        for cmd in (["cargo", "build", "--release", "-p", "vllm-profiler-agent", "-p", "fake-nvml"],
                    ["cargo", "bench", "--no-run", *sum((["--bench", b] for b in benches), [])]):
            if subprocess.run(cmd, cwd=tree, env=env).returncode != 0:
                raise SystemExit(f"compare_commits: `{' '.join(cmd)}` failed in {tree}")
    figures = {"before": {}, "after": {}}
    for round_ in range(opts.rounds):
        for bench in benches:
            for side, tree in (("before", before), ("after", AFTER)):
                sys.stderr.write(f"round {round_ + 1}/{opts.rounds}: {bench} ({side})\n")
                for ident, ns in run_bench(tree, bench, crit).items():
                    figures[side].setdefault(ident, []).append(ns)
    measured = figures
    idents = sorted(set(measured["before"]) | set(measured["after"]))
    missing = [i for i in idents if i not in measured["before"] or i not in measured["after"]]
    print("| benchmark | before (ns) | after (ns) | after/before | spread of rounds |")
    print("|---|---|---|---|---|")
    for ident in idents:
        if ident in missing:
            continue
        b, a = measured["before"][ident], measured["after"][ident]
        mb, ma = statistics.median(b), statistics.median(a)
        spread = max(max(b) / min(b), max(a) / min(a))
        print(f"| `{ident}` | {mb:.1f} | {ma:.1f} | {ma / mb:.3f} | {spread:.3f} |")
    if missing:
        sys.stderr.write("compare_commits: measured on one side only: " + ", ".join(missing) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
