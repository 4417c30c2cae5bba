"""P8: start-up time the agent adds to `python3 -c pass`.

Arms, run in rounds that alternate them (order rotating), each a fresh process timed from
spawn to exit (wall, perf_counter around posix_spawn + wait):
- base: `python3 -c pass`, no agent;
- preload_disabled: LD_PRELOAD=libvllm_profiler.so, VLLM_ENABLE_PROFILING unset;
- preload_enabled: LD_PRELOAD plus VLLM_ENABLE_PROFILING=1 (the constructor starts the
  threads, and the exit hook stops them);
and the package's start-up hook (`python/vllm_profiler.pth`, what `pip install .`
installs), processed by `python3 -c "import site; site.addsitedir(D)"`, D holding a copy of
the package compiled to bytecode as pip's install does (without the .pyc files every run would
compile the modules again, which an installed package never does):
- pth_base: D an empty folder (the same command, no .pth);
- pth_disabled: D = that copy (the .pth imports vllm_profiler._startup), profiling off;
- pth_enabled: D = that copy, LD_PRELOAD and VLLM_ENABLE_PROFILING=1 (agent plus the vLLM import
  hook installed), against pth_base.
Figures: median and p90 of each arm minus the same statistic of its base, in ms.
Prints one JSON object.
"""

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_ENABLED_MS = 2.0
TARGET_DISABLED_MS = 0.5


def p90(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]


def timed(argv, env):
    t0 = time.perf_counter()
    rc = subprocess.call(argv, env=env, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"startup: {argv} exited {rc}")
    return dt * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=None, help="runs per arm")
    args = parser.parse_args()
    runs = args.runs or (8 if args.smoke else 200)
    lib = os.environ.get("VLLM_PROFILER_LIBRARY") or os.path.join(
        ROOT, "target/release/libvllm_profiler.so"
    )
    py = sys.executable
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("VLLM_") and k not in ("LD_PRELOAD", "PYTHONPATH")}
    with tempfile.TemporaryDirectory(prefix="p8-") as tmp:
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        out_dir = os.path.join(tmp, "reports")
        preload = dict(clean, LD_PRELOAD=lib)
        enabled = dict(preload, VLLM_ENABLE_PROFILING="1", VLLM_PROFILING_OUTPUT_DIR=out_dir)
        site = "import site; site.addsitedir({!r})"
        pkg = os.path.join(tmp, "site-packages")
        shutil.copytree(os.path.join(ROOT, "python", "vllm_profiler"),
                        os.path.join(pkg, "vllm_profiler"))
        shutil.copy(os.path.join(ROOT, "python", "vllm_profiler.pth"), pkg)
        compileall.compile_dir(pkg, quiet=1)
        arms = {
            "base": ([py, "-c", "pass"], clean),
            "preload_disabled": ([py, "-c", "pass"], preload),
            "preload_enabled": ([py, "-c", "pass"], enabled),
            "pth_base": ([py, "-c", site.format(empty)], clean),
            "pth_disabled": ([py, "-c", site.format(pkg)], clean),
            "pth_enabled": ([py, "-c", site.format(pkg)], enabled),
        }
        names = list(arms)
        for name in names:  # warm up
            timed(*arms[name])
        times = {name: [] for name in names}
        for r in range(runs):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                times[name].append(timed(*arms[name]))

    def added(arm, base):
        a, b = times[arm], times[base]
        return {
            "median_ms": round(statistics.median(a) - statistics.median(b), 3),
            "p90_ms": round(p90(a) - p90(b), 3),
        }

    rows = {
        "preload_enabled": ("base", TARGET_ENABLED_MS),
        "preload_disabled": ("base", TARGET_DISABLED_MS),
        "pth_enabled": ("pth_base", TARGET_ENABLED_MS),
        "pth_disabled": ("pth_base", TARGET_DISABLED_MS),
    }
    out = {
        "id": "P8",
        "runs_per_arm": runs,
        "base_median_ms": round(statistics.median(times["base"]), 3),
        "base_p90_ms": round(p90(times["base"]), 3),
        "pth_base_median_ms": round(statistics.median(times["pth_base"]), 3),
    }
    met = True
    for arm, (base, target) in rows.items():
        fig = added(arm, base)
        fig["vs"] = base
        fig["target_ms"] = target
        fig["met"] = fig["median_ms"] <= target
        met = met and fig["met"]
        out[arm] = fig
    out["target"] = "added start-up (median) <= 2 ms enabled, <= 0.5 ms disabled"
    out["met"] = met
    print(json.dumps(out))


if __name__ == "__main__":
    main()
