#!/usr/bin/env bash
# The main job: build libvllm_profiler.so, run the example serving loop with the agent
# preloaded (started by VLLM_ENABLE_PROFILING=1, no code change), then show the report.
# Extra arguments go to examples/serving_loop.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vllm-profiler-agent
out="$PWD/profiling_results/run-$(date +%Y%m%d-%H%M%S)"
VLLM_ENABLE_PROFILING=1 \
VLLM_PROFILING_OUTPUT_DIR="$out" \
LD_PRELOAD="$PWD/target/release/libvllm_profiler.so" \
PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" \
    python3 examples/serving_loop.py "$@"
python3 examples/show_report.py "$out"
