#!/usr/bin/env bash
# Runs every test of the project: Rust unit tests, the recorder tests, the header check and the
# end-to-end tests that drive libvllm_profiler.so from C and Python processes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
