#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit tests, recorder tests, the header
# check, the end-to-end tests that drive libvllm_profiler.so from C and Python processes, the
# GPU tests against the fake NVML and amd-smi), then the Python package's pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
python3 -c "import pytest" 2>/dev/null || {
    echo "run_all.sh: pytest is missing (python3 -m pip install pytest nvidia-ml-py)" >&2
    exit 1
}
python3 -m pytest -q python/tests
