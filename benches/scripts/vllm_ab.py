"""P9: generate throughput of the real vLLM engine (the CPU build, the tiny Llama of the tests)
with profiling on, against off. A generate is 16 prompts x 48 tokens; a figure is generated
tokens per second; a pair's slowdown is (off - on) / off.

Two ways, as arms:
- `alt-on`, `alt-layers` (the default): one process with the in-process engine
  (VLLM_ENABLE_V1_MULTIPROCESSING=0) times PAIRS pairs of generates, profiling turned on
  (`enable_vllm_profiling`, with layer profiling for `alt-layers`) for one and off
  (`disable_vllm_profiling`) for the other, in an order that alternates from pair to pair;
  PROCESSES such processes. Both sides of a pair share one process, its engine, its threads
  and its memory, so the pair shows the profiler and little else. "Off" here is after a
  disable: the wrapped engine step is still in place (one flag test a step), the layer hooks
  are removed.
- `on`, `layers`: a pair is two fresh processes with the default multiprocess engine, one
  with VLLM_ENABLE_PROFILING=1 (`layers` adds VLLM_ENABLE_LAYER_PROFILING=1) and one without
  (the same installed package, whose start-up hook then does nothing); each times ROUNDS
  generates after a warm-up and keeps the median. This is the zero-code path as users run
  it, but on a 2-core VM one process differs from the next by tens of percent (three
  processes, an engine core and a worker, share the cores), so only a large effect shows.

Needs the venv of tests/python_env.sh (vLLM, and its test-site hook, which lets the package be
installed here with `pip install --target`, which builds the library with cargo's release
profile, as the benches' own builds are).

    python benches/scripts/vllm_ab.py [--pairs 10] [--processes 2] [--arms alt-on,alt-layers]
                                      [--rounds 5] [--smoke]

Prints one JSON object: per arm the per-pair slowdowns, their median, min and max, and both
arms' tokens/s.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_MODEL = os.path.join(ROOT, "python/tests/vllm_real/tiny_model.py")
PROMPTS = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(16)]
ARMS = {
    "on": {"VLLM_ENABLE_PROFILING": "1"},
    "layers": {"VLLM_ENABLE_PROFILING": "1", "VLLM_ENABLE_LAYER_PROFILING": "1"},
}
ALTERNATING = {"alt-on": False, "alt-layers": True}  # arm: with layer profiling


def make_llm(model):
    from vllm import LLM

    return LLM(model=model, enforce_eager=True, max_model_len=256, dtype="float32",
               enable_prefix_caching=False, seed=0)


def child(model, rounds, max_tokens, result):
    from vllm import SamplingParams

    llm = make_llm(model)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0)
    llm.generate(PROMPTS, params, use_tqdm=False)  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        outputs = llm.generate(PROMPTS, params, use_tqdm=False)
        times.append(time.perf_counter() - t0)
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    with open(result, "w") as f:
        json.dump({"tokens": tokens, "seconds": times}, f)
    llm.llm_engine.engine_core.shutdown()


def alternating_child(model, pairs, max_tokens, layers, out_dir, result):
    """One in-process engine; `pairs` pairs of timed generates, profiling on for one of each."""
    from vllm import SamplingParams

    from vllm_profiler.integration import disable_vllm_profiling, enable_vllm_profiling

    llm = make_llm(model)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0)

    def generate():
        t0 = time.perf_counter()
        outputs = llm.generate(PROMPTS, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        return sum(len(o.outputs[0].token_ids) for o in outputs) / seconds

    generate()  # warm-up, off
    enable_vllm_profiling(output_dir=out_dir, enable_layer_profiling=layers)
    generate()  # warm-up, on
    disable_vllm_profiling()
    got = []
    for pair in range(pairs):
        figures = {}
        for label in (("off", "on") if pair % 2 == 0 else ("on", "off")):
            if label == "on":
                enable_vllm_profiling(output_dir=out_dir, enable_layer_profiling=layers)
            figures[label] = generate()
            if label == "on":
                disable_vllm_profiling()
        got.append(figures)
    # The "on" sides did record (a bench that measured nothing would pass unseen).
    with open(os.path.join(out_dir, f"performance_summary_{os.getpid()}.json")) as f:
        recorded = json.load(f)
    if recorded["total_steps"] < pairs + 1 or bool(recorded["layer_performance"]) != layers:
        sys.exit(f"vllm_ab: the on generates were not recorded as asked: {recorded['total_steps']}"
                 f" steps, {len(recorded['layer_performance'])} layers")
    with open(result, "w") as f:
        json.dump(got, f)


def spawn(env, argv, label, cwd):
    proc = subprocess.run(
        [sys.executable, __file__, *argv], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, timeout=900,
    )
    if proc.returncode != 0:
        sys.exit(f"vllm_ab: the {label} process failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def summary(pairs, off, on, slowdowns):
    return {
        "pairs": pairs,
        "slowdown_pct_per_pair": [round(x, 3) for x in slowdowns],
        "slowdown_pct_median": statistics.median(slowdowns),
        "slowdown_pct_min": min(slowdowns),
        "slowdown_pct_max": max(slowdowns),
        # Quartiles: how far apart the pairs are (one pair cannot have quartiles).
        "slowdown_pct_quartiles": (statistics.quantiles(slowdowns, n=4) if len(slowdowns) > 1
                                   else [slowdowns[0]] * 3),
        "off_tokens_per_s": [round(x, 1) for x in off],
        "on_tokens_per_s": [round(x, 1) for x in on],
        "off_spread_pct": 100.0 * (max(off) - min(off)) / statistics.median(off),
    }


def alternating_arm(arm, base, args, tmp):
    env = dict(base, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    off, on, slowdowns = [], [], []
    for process in range(args.processes):
        result = os.path.join(tmp, f"{arm}-{process}.json")
        spawn(env, ["--alternating-child", args.model, str(args.pairs), str(args.max_tokens),
                    str(int(ALTERNATING[arm])), os.path.join(tmp, arm), result],
              f"{arm} {process}", tmp)
        with open(result) as f:
            for pair, figures in enumerate(json.load(f)):
                off.append(figures["off"])
                on.append(figures["on"])
                slowdowns.append(100.0 * (figures["off"] - figures["on"]) / figures["off"])
                print(f"vllm_ab: {arm} process {process} pair {pair}: off {figures['off']:.0f} "
                      f"tok/s, on {figures['on']:.0f} tok/s, {slowdowns[-1]:+.2f} %",
                      file=sys.stderr)
    figures = summary(len(slowdowns), off, on, slowdowns)
    figures["processes"] = args.processes
    return figures


def run(env, args, tmp, label):
    result = os.path.join(tmp, f"{label}.json")
    spawn(dict(env), ["--child", args.model, str(args.rounds), str(args.max_tokens), result],
          label, tmp)
    with open(result) as f:
        r = json.load(f)
    return r["tokens"] / statistics.median(r["seconds"])


def recorded_pids(out_dir):
    if not os.path.isdir(out_dir):
        return set()
    return {name.split("_")[-1].split(".")[0] for name in os.listdir(out_dir)
            if name.startswith("detailed_steps_") or
            (name.startswith("journal_") and name.endswith(".snapshot"))}


def process_pairs_arm(arm, base, args, tmp):
    on_env = dict(base, VLLM_PROFILING_OUTPUT_DIR=os.path.join(tmp, arm), **ARMS[arm])
    off, on, slowdowns = [], [], []
    for pair in range(args.pairs):
        order = [("off", base), (arm, on_env)]
        if pair % 2:
            order.reverse()
        got = {label: run(env, args, tmp, f"{arm}-{pair}-{label}") for label, env in order}
        # Each "on" process recorded: its engine core's reports, or (killed by vLLM's
        # shutdown) its journal.
        recorded = recorded_pids(on_env["VLLM_PROFILING_OUTPUT_DIR"])
        if len(recorded) < pair + 1:
            sys.exit(f"vllm_ab: {arm} pair {pair}: the on process recorded nothing")
        off.append(got["off"])
        on.append(got[arm])
        slowdowns.append(100.0 * (got["off"] - got[arm]) / got["off"])
        print(f"vllm_ab: {arm} pair {pair}: off {got['off']:.0f} tok/s, "
              f"on {got[arm]:.0f} tok/s, {slowdowns[-1]:+.2f} %", file=sys.stderr)
    return summary(args.pairs, off, on, slowdowns)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, rounds, max_tokens, result = sys.argv[2:6]
        return child(model, int(rounds), int(max_tokens), result)
    if len(sys.argv) > 1 and sys.argv[1] == "--alternating-child":
        model, pairs, max_tokens, layers, out_dir, result = sys.argv[2:8]
        return alternating_child(model, int(pairs), int(max_tokens), layers == "1", out_dir,
                                 result)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one pair of one arm, briefly")
    parser.add_argument("--pairs", type=int, default=10,
                        help="pairs of processes (on, layers); pairs per process (alt-*)")
    parser.add_argument("--processes", type=int, default=2, help="processes per alt-* arm")
    parser.add_argument("--arms", default="alt-on,alt-layers")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed generates per process (on, layers)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model", help="a model dir (default: the tests' tiny Llama, made now)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [arm for arm in arms if arm not in ARMS and arm not in ALTERNATING]
    if unknown:
        parser.error(f"unknown arms {unknown}: choose from {sorted([*ALTERNATING, *ARMS])}")
    if args.smoke:
        args.pairs, args.processes, args.rounds, args.max_tokens, arms = 1, 1, 1, 8, arms[:1]
    # The installed package, not the checkout's (run_all.sh puts python/ on PYTHONPATH).
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("VLLM_") and k not in ("LD_PRELOAD", "PYTHONPATH")}
    base.update({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                 "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                 "DO_NOT_TRACK": "1"})
    if args.smoke:
        base["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # starts twice as fast: this only checks it runs
    with tempfile.TemporaryDirectory(prefix="p9-") as tmp:
        if args.model is None:
            args.model = os.path.join(tmp, "model")
            subprocess.run([sys.executable, TINY_MODEL, args.model], check=True,
                           capture_output=True)
        site = os.path.join(tmp, "site")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation",
             "--no-deps", "--no-cache-dir", "--target", site, ROOT],
            check=True, capture_output=True,
            env=dict(os.environ, SETUPTOOLS_RUST_CARGO_PROFILE="release"),
        )
        base["VLLM_PROFILER_TEST_SITE"] = site
        figures = {}
        for arm in arms:
            if arm in ALTERNATING:
                figures[arm] = alternating_arm(arm, base, args, tmp)
            else:
                figures[arm] = process_pairs_arm(arm, base, args, tmp)
    print(json.dumps({"arms": figures, "rounds": args.rounds, "max_tokens": args.max_tokens,
                      "prompts": len(PROMPTS), "smoke": args.smoke}))


if __name__ == "__main__":
    main()
