"""Builds libvllm_profiler.so once and runs each scenario in its own Python process: the
profiler is per process, and the tests cover both ways of loading it (preloaded with
LD_PRELOAD, and found through VLLM_PROFILER_LIBRARY)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "python"
SCENARIOS = Path(__file__).resolve().parent / "scenarios.py"


def build(package: str, file_name: str) -> Path:
    out = subprocess.run(
        ["cargo", "build", "-q", "-p", package, "--lib", "--message-format=json"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        for name in msg.get("filenames") or []:
            if name.endswith("/" + file_name):
                return Path(name)
    raise RuntimeError(f"cargo reported no {file_name}")


@pytest.fixture(scope="session")
def agent_library() -> Path:
    return build("vllm-profiler-agent", "libvllm_profiler.so")


@pytest.fixture(scope="session")
def cli(agent_library) -> str:
    """The vllm-profiler binary, built here."""
    out = subprocess.run(
        ["cargo", "build", "-q", "-p", "vllm-profiler-cli", "--message-format=json"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        exe = json.loads(line).get("executable")
        if exe and exe.endswith("/vllm-profiler"):
            return exe
    raise RuntimeError("cargo reported no vllm-profiler binary")


@pytest.fixture(scope="session")
def fake_nvml() -> Path:
    return build("fake-nvml", "libfake_nvml.so")


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_") and k != "LD_PRELOAD"}
    env["PYTHONPATH"] = str(PACKAGE_DIR)
    # No real GPU library may answer here: the reports must not depend on the machine.
    env["VLLM_PROFILING_NVML_LIBRARY"] = "/nonexistent/libnvidia-ml.so.1"
    env["VLLM_PROFILING_AMDSMI_LIBRARY"] = "/nonexistent/libamd_smi.so"
    # Where processes share GPU samples: a fresh one per test, so that a test's fake GPUs never
    # meet another test's.
    env["VLLM_PROFILING_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="vprof-runtime-")
    return env


def mode_env(mode: str, agent_library: Path) -> dict:
    """A clean environment where the library is preloaded, or left for the package to load."""
    env = clean_env()
    if mode == "preloaded":
        env["LD_PRELOAD"] = str(agent_library)
    else:
        env["VLLM_PROFILER_LIBRARY"] = str(agent_library)
    return env


@pytest.fixture(params=["preloaded", "loaded"])
def run_scenario(request, agent_library, tmp_path):
    """Runs `scenarios.py NAME ARGS...` in a fresh process, the library preloaded or loaded by
    the package; returns (completed process, output dir)."""

    def run(name, *args, env_extra=None, timeout=60):
        env = mode_env(request.param, agent_library)
        env.update(env_extra or {})
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, str(SCENARIOS), name, str(out), *map(str, args)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc, out

    run.mode = request.param
    return run


# Set by .ci/run: a test that would skip for want of a tool fails instead, so that a broken
# install step cannot pass as a skip.
REQUIRE_TOOLS = "VLLM_PROFILER_REQUIRE_TOOLS"


def missing_tool(reason: str) -> None:
    """Skips the test for want of a tool (`reason` says which and how to get it), or fails it
    where VLLM_PROFILER_REQUIRE_TOOLS is set."""
    if os.environ.get(REQUIRE_TOOLS):
        pytest.fail(f"{reason}; {REQUIRE_TOOLS} is set, so this fails instead of skipping")
    pytest.skip(reason)


def require_module(name: str, reason: str) -> None:
    """`missing_tool(reason)` unless module `name` can be imported."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        missing_tool(reason)


def free_port() -> int:
    """A loopback port free now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_report(out: Path, kind: str, pid: int) -> dict:
    with open(out / f"{kind}_{pid}.json", encoding="utf-8") as f:
        return json.load(f)
