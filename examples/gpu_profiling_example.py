"""Seed 004's dedicated monitoring script: profile a vLLM model on a batch of prompts and
print what the profiler saw.

    python examples/gpu_profiling_example.py --model facebook/opt-125m --mode detailed \
        --num-prompts 100 --enable-detailed-profiling --output-dir ./detailed_profiling

Needs vLLM and the `vllm_profiler` package (`pip install .`). `--mode basic` records
engine steps and GPU samples; `--mode detailed` (or `--enable-detailed-profiling`) also hooks
every layer of the model (run vLLM eagerly for that: `--enforce-eager` is passed to `LLM`).
The summary goes to stdout; the reports are written to --output-dir.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

PROMPTS = [
    "The food at restaurant A was",
    "Our waiter at restaurant B seemed",
    "The dessert menu of restaurant C is",
    "Compared with last year, the service",
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="facebook/opt-125m")
    parser.add_argument("--mode", choices=["basic", "detailed"], default="basic")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--enable-detailed-profiling", action="store_true",
                        help="hook every layer of the model (same as --mode detailed)")
    parser.add_argument("--record-shapes", action="store_true",
                        help="with layer hooks, also record tensor shapes")
    parser.add_argument("--sample-interval", type=float, default=0.1)
    parser.add_argument("--output-dir", default="./profiling_results")
    args = parser.parse_args(argv)
    if args.num_prompts < 1 or args.max_tokens < 1:
        parser.error("--num-prompts and --max-tokens must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    detailed = args.mode == "detailed" or args.enable_detailed_profiling
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:
        print(f"gpu_profiling_example: vLLM is not installed ({err})", file=sys.stderr)
        return 2
    from vllm_profiler.integration import disable_vllm_profiling, enable_vllm_profiling
    from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor

    enable_vllm_profiling(
        enable_gpu_monitoring=True,
        enable_layer_profiling=detailed,
        output_dir=args.output_dir,
        sample_interval=args.sample_interval,
        record_shapes=args.record_shapes,
    )
    llm = LLM(args.model, enforce_eager=detailed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.num_prompts)]
    started = time.perf_counter()
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=args.max_tokens))
    elapsed = time.perf_counter() - started
    summary = VLLMPerformanceMonitor().get_performance_summary()
    disable_vllm_profiling()

    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(f"{len(outputs)} prompts, {generated} tokens generated in {elapsed:.2f} s")
    print(f"engine steps: {summary['total_steps']}  tokens scheduled: {summary['total_tokens']}")
    if summary["total_steps"]:
        print("step duration ms: avg {avg_duration_ms:.2f}  p50 {p50_duration_ms:.2f}  "
              "p99 {p99_duration_ms:.2f}  max {max_duration_ms:.2f}".format(**summary))
    layers = sorted(summary["layer_performance"].items(),
                    key=lambda kv: -kv[1]["avg_duration_ms"] * kv[1]["call_count"])
    if layers:
        # Host time launches the work; on a GPU the device's time is apart (null on CPU).
        print("slowest layers (host total ms, GPU total ms, calls):")
        for name, layer in layers[:8]:
            total = layer["avg_duration_ms"] * layer["call_count"]
            gpu = layer.get("total_gpu_duration_ms")
            gpu_text = f"{gpu:10.2f}" if gpu is not None else f"{'-':>10}"
            print(f"  {name:<40} {total:10.2f} {gpu_text} {layer['call_count']:8d}")
    reports = sorted(glob.glob(os.path.join(args.output_dir, f"*_{os.getpid()}.json")))
    print("reports: " + json.dumps(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
