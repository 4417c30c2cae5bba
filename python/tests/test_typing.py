"""The package type-checks under `mypy --strict` and passes `ruff check` (both configured in
pyproject.toml at the root), and so does a small typed user script of its public API
(examples/typed_user.py), which also runs. Under .ci/run a missing tool fails the test."""

import os
import subprocess
import sys

from conftest import PACKAGE_DIR, ROOT, clean_env, require_module

USER_SCRIPT = ROOT / "examples" / "typed_user.py"
CONFIG = ROOT / "pyproject.toml"


def run_tool(*args):
    env = dict(os.environ, MYPYPATH=str(PACKAGE_DIR))
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_package_and_a_typed_user_script_pass_mypy_strict():
    require_module("mypy", "pip install mypy (tests/python_env.sh does)")
    proc = run_tool("mypy", "--config-file", str(CONFIG), "--no-incremental",
                    str(PACKAGE_DIR / "vllm_profiler"), str(USER_SCRIPT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found in ")


def test_the_package_and_a_typed_user_script_pass_ruff():
    require_module("ruff", "pip install ruff (tests/python_env.sh does)")
    proc = run_tool("ruff", "check", "--config", str(CONFIG), "--no-cache",
                    str(PACKAGE_DIR / "vllm_profiler"), str(USER_SCRIPT))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_typed_user_script_runs(agent_library, tmp_path):
    env = clean_env()
    env["VLLM_PROFILER_LIBRARY"] = str(agent_library)
    proc = subprocess.run([sys.executable, str(USER_SCRIPT), str(tmp_path / "out")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "3\n", "")


def test_the_public_names_are_the_lazy_exports():
    code = ("import vllm_profiler as v; print(sorted(v.__all__) == sorted([*v._EXPORTS, "
            "'__version__']))")
    env = clean_env()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout == "True\n", proc.stderr
