#!/usr/bin/env bash
# The main job: build libvllm_profiler.so and the vllm-profiler CLI, run the example serving
# loop with the agent preloaded (started by VLLM_ENABLE_PROFILING=1, no code change), then
# show the report with `vllm-profiler report`, and write its HTML page and the merged trace.
# Extra arguments go to examples/serving_loop.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vllm-profiler-agent -p vllm-profiler-cli
cli="$PWD/target/release/vllm-profiler"
# VLLM_PROFILING_OUTPUT_DIR, when set, is where the reports go (the agent's own variable).
out="${VLLM_PROFILING_OUTPUT_DIR:-$PWD/profiling_results/run-$(date +%Y%m%d-%H%M%S)}"
VLLM_ENABLE_PROFILING=1 \
VLLM_PROFILING_OUTPUT_DIR="$out" \
LD_PRELOAD="$PWD/target/release/libvllm_profiler.so" \
PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" \
    python3 examples/serving_loop.py "$@"
"$cli" report --html "$out/report.html" "$out"
"$cli" trace --output "$out/trace.json" "$out"
echo
echo "Reports: $out"
echo "  HTML page:    $out/report.html (open it in a browser)"
echo "  merged trace: $out/trace.json (open it in https://ui.perfetto.dev)"
