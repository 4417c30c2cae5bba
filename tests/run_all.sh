#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit tests, recorder and journal tests,
# the header check, the end-to-end tests that drive libvllm_profiler.so from C and Python
# processes, the GPU tests against the fake NVML and amd-smi), then the Python package's pytest
# suite, the real-vLLM tests among them.
#
# Every test runs with one Python: the venv of tests/python_env.sh (the CPU build of vLLM, its
# torch, pytest and the other test tools), made or checked first, before the long build. Every
# part runs even when one before it failed; the exit status is 1 if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash tests/python_env.sh)
export PATH="$venv/bin:$PATH"
failed=()
cargo test --workspace --all-targets --no-fail-fast || failed+=("cargo test")
python -m pytest -q python/tests || failed+=("pytest")
if [ ${#failed[@]} -gt 0 ]; then
    echo "run_all.sh: failed: ${failed[*]}" >&2
    exit 1
fi
