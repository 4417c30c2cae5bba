#!/usr/bin/env bash
# The overhead suite of issue 5 in one command: builds the release library and the fake NVML,
# runs the criterion benches and the scripts of benches/scripts/, and prints one table
# (id | what | ours | compared with | ratio | target | met?). Every figure is a pair or a ratio
# measured in this run on this machine; nothing here fails on a slow figure, but a part that did
# not run does: every part is still tried, then the runner exits 1 naming the parts that failed.
#
#   bash benches/run_all.sh           # the full run (several minutes)
#   bash benches/run_all.sh --smoke   # everything, briefly (CI: checks that it all runs)
#
# The JSON pieces stay in $BENCH_OUT (default target/bench-overhead/).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1 ;;
        *) echo "usage: bash benches/run_all.sh [--smoke]" >&2; exit 2 ;;
    esac
done
target_dir=${CARGO_TARGET_DIR:-target}
out=${BENCH_OUT:-$target_dir/bench-overhead}
rm -rf "$out" && mkdir -p "$out"

cargo build --release -p vllm-profiler-agent -p fake-nvml
export VLLM_PROFILER_LIBRARY=$PWD/$target_dir/release/libvllm_profiler.so
export FAKE_NVML_LIBRARY=$PWD/$target_dir/release/libfake_nvml.so
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
unset VLLM_ENABLE_PROFILING LD_PRELOAD

if [ "$smoke" = 1 ]; then
    export BENCH_SMOKE=1
    crit_args=(--warm-up-time 0.2 --measurement-time 0.5)
    script_args=(--smoke)
else
    crit_args=(--warm-up-time 1 --measurement-time 3)
    script_args=()
fi

failed=()
# A part that fails is named, its log shown, and the rest still runs.
fail() {
    echo "run_all.sh: $1 failed; see $2" >&2
    tail -n 40 "$2" >&2
    failed+=("$1")
}

for bench in c_abi export step_overhead gpu_sampler journal kernels; do
    echo "== cargo bench --bench $bench" >&2
    cargo bench --bench "$bench" -- "${crit_args[@]}" >"$out/$bench.log" 2>&1 ||
        fail "bench $bench" "$out/$bench.log"
done
echo "== cargo bench --bench p6_p7_probe -- all" >&2
cargo bench --bench p6_p7_probe -- all >"$out/p6_p7.raw" 2>"$out/p6_p7_probe.log" ||
    fail "p6_p7_probe" "$out/p6_p7_probe.log"
grep '^{' "$out/p6_p7.raw" | tail -n 1 >"$out/p6_p7.json" || true

for piece in p3:python_overhead p4:sampler_vs_pynvml p5:serving_ab p8:startup p9:vllm_ab \
    p11:metrics_group p12:torch_op_windows; do
    id=${piece%%:*} script=${piece#*:}
    echo "== benches/scripts/$script.py ${script_args[*]}" >&2
    python3 "benches/scripts/$script.py" "${script_args[@]}" >"$out/$id.json" 2>"$out/$id.log" ||
        fail "$script.py" "$out/$id.log"
done

# The table also fails when a piece it expects is missing or unreadable.
python3 benches/scripts/table.py --criterion "$target_dir/criterion" --pieces "$out" ||
    failed+=("table.py (missing pieces)")
if [ ${#failed[@]} -gt 0 ]; then
    echo "run_all.sh: ${#failed[@]} part(s) did not run: ${failed[*]}" >&2
    exit 1
fi
