"""P9: generate throughput of the real vLLM engine (the CPU build, the tiny Llama of the tests)
with profiling on, against off, in interleaved pairs of fresh processes.

Each process makes an `LLM` (the default multiprocess engine, enforce_eager), generates once to
warm up, then times ROUNDS generates of 16 prompts x 48 tokens and keeps the median; its figure
is generated tokens per second of that median generate. A pair is one "off" process and one
"on" process, run back to back in an order that alternates from pair to pair; its slowdown is
(off - on) / off. Arms: `on` is VLLM_ENABLE_PROFILING=1 with every default; `layers` adds
VLLM_ENABLE_LAYER_PROFILING=1. "Off" is the same installed package with profiling unset (its
start-up hook then does nothing).

Needs the venv of tests/python_env.sh (vLLM, and its test-site hook, which lets the package be
installed here with `pip install --target`) and the release library ($VLLM_PROFILER_LIBRARY).

    python benches/scripts/vllm_ab.py [--pairs 10] [--arms on,layers] [--smoke]

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


def child(model, rounds, max_tokens, result):
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, enforce_eager=True, max_model_len=256, dtype="float32",
              enable_prefix_caching=False, seed=0)
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


def run(env, args, tmp, label):
    result = os.path.join(tmp, f"{label}.json")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", args.model, str(args.rounds), str(args.max_tokens),
         result],
        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        sys.exit(f"vllm_ab: the {label} process failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    with open(result) as f:
        r = json.load(f)
    return r["tokens"] / statistics.median(r["seconds"])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, rounds, max_tokens, result = sys.argv[2:6]
        return child(model, int(rounds), int(max_tokens), result)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one pair of one arm, briefly")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--arms", default="on,layers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model", help="a model dir (default: the tests' tiny Llama, made now)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    if args.smoke:
        args.pairs, args.rounds, args.max_tokens, arms = 1, 1, 8, arms[:1]
    library = os.environ.get("VLLM_PROFILER_LIBRARY") or os.path.join(
        ROOT, "target/release/libvllm_profiler.so")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("VLLM_") and k != "LD_PRELOAD"}
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
             "--no-deps", "--no-cache-dir", "--target", site, os.path.join(ROOT, "python")],
            check=True, capture_output=True,
            env=dict(os.environ, VLLM_PROFILER_PREBUILT_LIBRARY=library),
        )
        base["VLLM_PROFILER_TEST_SITE"] = site
        figures = {}
        for arm in arms:
            on_env = dict(base, VLLM_PROFILING_OUTPUT_DIR=os.path.join(tmp, arm), **ARMS[arm])
            off, on, slowdowns = [], [], []
            for pair in range(args.pairs):
                order = [("off", base), (arm, on_env)]
                if pair % 2:
                    order.reverse()
                got = {label: run(env, args, tmp, f"{arm}-{pair}-{label}")
                       for label, env in order}
                off.append(got["off"])
                on.append(got[arm])
                slowdowns.append(100.0 * (got["off"] - got[arm]) / got["off"])
                print(f"vllm_ab: {arm} pair {pair}: off {got['off']:.0f} tok/s, "
                      f"on {got[arm]:.0f} tok/s, {slowdowns[-1]:+.2f} %", file=sys.stderr)
            figures[arm] = {
                "pairs": args.pairs,
                "slowdown_pct_per_pair": [round(x, 3) for x in slowdowns],
                "slowdown_pct_median": statistics.median(slowdowns),
                "slowdown_pct_min": min(slowdowns),
                "slowdown_pct_max": max(slowdowns),
                "off_tokens_per_s": [round(x, 1) for x in off],
                "on_tokens_per_s": [round(x, 1) for x in on],
                "off_spread_pct": 100.0 * (max(off) - min(off)) / statistics.median(off),
            }
    print(json.dumps({"arms": figures, "rounds": args.rounds, "max_tokens": args.max_tokens,
                      "prompts": len(PROMPTS)}))


if __name__ == "__main__":
    main()
