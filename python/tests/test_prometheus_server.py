"""One Prometheus endpoint for a host's profiled processes (VLLM_PROFILING_PROMETHEUS_ADDR set
for all of them): one process serves every process's series, each labelled by pid and role; the
classic text passes promtool; SIGKILL of the serving process hands the port to another, and the
series of a process that is gone expire.

The processes are stand-ins that say their role through the C ABI, as the vLLM hook does: the
real server's roles are checked in test_real_vllm.py."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from conftest import free_port, missing_tool, mode_env, require_module
from test_prometheus import SCRIPT, families, scrape

MEMBER = """
import sys, time
from vllm_profiler import _native
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
role, rank, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
_native.check(_native.library().vllm_profiler_set_role(role.encode(), rank))
monitor = VLLMPerformanceMonitor()
for i in range(steps):
    with monitor.profile_inference_step(batch_size=1, num_tokens=10):
        time.sleep(0.001)
print("ready", flush=True)
sys.stdin.readline()
"""

# (role, rank, steps) of each stand-in.
MEMBERS = [("api_server", -1, 0), ("engine_core", -1, 5), ("worker", 0, 3), ("worker", 1, 4)]
EXPIRY_S = 4


def start_members(agent_library, fake_nvml, tmp_path, addr, members=MEMBERS, code=MEMBER,
                  script=SCRIPT):
    """One process per (role, rank, steps) of `members`, running `code`, all with the same
    Prometheus address and runtime dir; returned once each said it is ready."""
    script_path = tmp_path / "nvml.json"
    script_path.write_text(json.dumps(script))
    runtime = tmp_path / "runtime"
    started = []
    for role, rank, steps in members:
        env = mode_env("preloaded", agent_library)
        env.pop("VLLM_PROFILING_AMDSMI_LIBRARY")
        env.update({
            "VLLM_ENABLE_PROFILING": "1",
            "VLLM_PROFILING_OUTPUT_DIR": str(tmp_path / "out"),
            "VLLM_PROFILING_PROMETHEUS_ADDR": addr,
            "VLLM_PROFILING_PROMETHEUS_EXPIRY": str(EXPIRY_S),
            "VLLM_PROFILING_RUNTIME_DIR": str(runtime),
            "VLLM_PROFILING_NVML_LIBRARY": str(fake_nvml),
            "FAKE_NVML_SCRIPT": str(script_path),
            "VLLM_PROFILING_SAMPLE_INTERVAL": "0.05",
        })
        proc = subprocess.Popen(
            [sys.executable, "-c", code, role, str(rank), str(steps)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
    for proc in started:
        first = proc.stdout.readline()
        assert first.strip() == "ready", (first, proc.stderr.read() if proc.poll() else "")
    return started


def stop_members(members):
    errors = []
    for proc in members:
        if proc.poll() is None:
            _, err = proc.communicate(input="\n", timeout=30)
            assert proc.returncode == 0, err
            errors.append(err)
    return errors


def steps_by_process(text):
    """{pid: (role, rank, steps)} from the steps counter."""
    found = {}
    for sample in families(text)["vllm_profiler_steps"].samples:
        labels = sample.labels
        found[int(labels["pid"])] = (labels["role"], labels.get("rank"), sample.value)
    return found


def expected(members):
    return {p.pid: (role, None if rank < 0 else str(rank), steps)
            for p, (role, rank, steps) in members}


def wait_for(url, check, timeout=20):
    """Scrapes until `check(text)` holds; the last text."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = scrape(url)
            if check(text):
                return text
        except (urllib.error.URLError, ConnectionError):
            text = None
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


def listening_pid(port, pids):
    """Which of `pids` holds the listening socket of `port`."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":%04X" % port) and fields[3] == "0A":
                inodes.add(fields[9])
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    raise AssertionError(f"none of {pids} listens on {port}")


def test_one_endpoint_serves_every_process_and_survives_the_kill_of_its_server(
    agent_library, fake_nvml, tmp_path
):
    require_module("prometheus_client", "pip install prometheus_client (tests/python_env.sh does)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    members = start_members(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}")
    try:
        everyone = expected(zip(members, MEMBERS))
        text = wait_for(url, lambda t: steps_by_process(t) == everyone)
        # Each device once, whichever process serves it.
        utilization = families(text)["vllm_profiler_gpu_utilization_percent"].samples
        assert [(s.labels["gpu"], s.value) for s in utilization] == [("0", 37.0)]
        # Every process's step histogram, labelled by the process.
        counts = {int(s.labels["pid"]): s.value
                  for s in families(text)["vllm_profiler_step_duration_seconds"].samples
                  if s.name.endswith("_count")}
        assert counts == {pid: steps for pid, (_, _, steps) in everyone.items()}

        server = listening_pid(port, [p.pid for p in members])
        killed = next(p for p in members if p.pid == server)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        killed_at = time.monotonic()
        rest = {pid: v for pid, v in everyone.items() if pid != server}
        # Another process serves the port; the killed one's last figures are served until
        # they expire, then it is gone and the others stay.
        after = wait_for(url, lambda t: rest.items() <= steps_by_process(t).items())
        if time.monotonic() - killed_at < EXPIRY_S - 2:
            assert steps_by_process(after) == everyone
        wait_for(url, lambda t: steps_by_process(t) == rest, timeout=EXPIRY_S + 20)
        assert listening_pid(port, list(rest)) in rest
        group = tmp_path / "runtime" / f"prometheus-{port}"
        assert sorted(p.name for p in group.iterdir()) == sorted(
            ["serve.lock"] + [f"{pid}.json" for pid in rest])
    finally:
        for proc in members:
            if proc.poll() is None and proc.pid == locals().get("server"):
                proc.kill()
        errors = stop_members(members)
    for err in errors:
        assert "vllm-profiler:" not in err, err


def test_the_classic_text_of_a_multi_process_host_passes_promtool(
    agent_library, fake_nvml, tmp_path
):
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("no promtool (Debian: apt-get install prometheus; .ci/run does)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    members = start_members(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}")
    try:
        everyone = expected(zip(members, MEMBERS))
        wait_for(url, lambda t: steps_by_process(t) == everyone)
        classic = scrape(url, "text/plain; version=0.0.4")
        checked = subprocess.run([promtool, "check", "metrics"], input=classic,
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr + classic
        assert checked.stdout + checked.stderr == "", checked.stdout + checked.stderr
        # Every process appears in every per-process family of the classic text.
        for pid in everyone:
            assert f'vllm_profiler_tokens_total{{pid="{pid}",' in classic, classic
    finally:
        stop_members(members)


def test_alone_a_process_keeps_trying_the_port_a_foreign_program_held(
    agent_library, fake_nvml, tmp_path
):
    """A runtime dir others can write to is refused: the process serves alone, and, as its
    warning says, goes on trying the port that a foreign program held until it is free."""
    require_module("prometheus_client", "pip install prometheus_client (tests/python_env.sh does)")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    runtime.chmod(0o777)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (member,) = start_members(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}",
                                  members=[("engine_core", -1, 2)])
        time.sleep(1)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        text = wait_for(url, lambda t: steps_by_process(t) == {member.pid: ("engine_core", None, 2)})
        assert "vllm_profiler_steps_total" in text
    finally:
        (err,) = stop_members([member])
    # One line each: the GPU samples and the metrics are not shared, the port was in use.
    lines = sorted(line for line in err.splitlines() if line.startswith("vllm-profiler:"))
    assert len(lines) == 3, err
    assert lines[0].startswith("vllm-profiler: GPU samples are not shared"), lines
    assert "writable by other users" in lines[1] and "serves its own there" in lines[1], lines
    assert lines[2].startswith(f"vllm-profiler: cannot serve Prometheus metrics on 127.0.0.1:{port}")
    assert "retrying while profiling is on" in lines[2]
