"""The Prometheus endpoint (VLLM_PROFILING_PROMETHEUS_ADDR) of a preloaded agent: its text
parses with the official client's OpenMetrics parser and carries exact values; a real
Prometheus server scrapes it; a port in use is one stderr line and the host goes on."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, missing_tool, mode_env, read_report, require_module

MIB = 1024 * 1024
STEPS = 7

HOST = """
import sys, time
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
monitor = VLLMPerformanceMonitor()
for i in range(%d):
    with monitor.profile_inference_step(batch_size=2, num_tokens=10):
        time.sleep(0.03)
print("ready", flush=True)
sys.stdin.readline()  # the test closes stdin when it is done
""" % STEPS

SCRIPT = {
    "devices": [
        {
            "name": "Scraped GPU",
            "uuid": "GPU-feedface-0000-0000-0000-000000000000",
            "memory_total_mb": 8192,
            "frames": [
                {
                    "gpu_utilization": 37,
                    "memory_controller_utilization": 5,
                    "memory_used_mb": 2048,
                    "temperature": 55,
                    "power_draw_mw": 123000,
                }
            ],
        }
    ]
}




REENABLE = """
import sys, time
from vllm_profiler.integration import disable_vllm_profiling, enable_vllm_profiling
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
monitor = VLLMPerformanceMonitor()
for round in range(3):
    enable_vllm_profiling(sample_interval=0.05)
    for i in range(2):
        with monitor.profile_inference_step(batch_size=1, num_tokens=10):
            time.sleep(0.01)
    if round < 2:
        disable_vllm_profiling()  # and at once enable again: the port must be served again
print("ready", flush=True)
sys.stdin.readline()
"""


def start_host(agent_library, fake_nvml, tmp_path, addr, code=HOST):
    script = tmp_path / "nvml.json"
    script.write_text(json.dumps(SCRIPT))
    env = mode_env("preloaded", agent_library)
    # The default amd-smi name, absent here, is skipped silently; a named one would warn.
    env.pop("VLLM_PROFILING_AMDSMI_LIBRARY")
    env.update(
        {
            "VLLM_ENABLE_PROFILING": "1",
            "VLLM_PROFILING_OUTPUT_DIR": str(tmp_path / "out"),
            "VLLM_PROFILING_PROMETHEUS_ADDR": addr,
            "VLLM_PROFILING_NVML_LIBRARY": str(fake_nvml),
            "FAKE_NVML_SCRIPT": str(script),
            "VLLM_PROFILING_SAMPLE_INTERVAL": "0.05",
        }
    )
    host = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        # A host that passes output_dir itself (enable_vllm_profiling's default) writes here.
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = host.stdout.readline()
    if first.strip() != "ready":
        host.kill()
        raise AssertionError(f"{first!r}\n{host.stderr.read()}")
    return host


def _stderr_line(host, timeout_s):
    """The host's first stderr line, waited for at most `timeout_s` ("" if none came)."""
    import select

    ready, _, _ = select.select([host.stderr], [], [], timeout_s)
    return host.stderr.readline() if ready else ""


def stop_host(host):
    out, err = host.communicate(input="\n", timeout=30)
    assert host.returncode == 0, err
    return out, err


OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CLASSIC = "text/plain; version=0.0.4; charset=utf-8"


def scrape(url: str, accept: str = "application/openmetrics-text; version=1.0.0") -> str:
    """The endpoint's text, in the format `accept` asks for (OpenMetrics by default)."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        wanted = OPENMETRICS if "openmetrics" in (accept or "") else CLASSIC
        assert response.headers["Content-Type"] == wanted, response.headers["Content-Type"]
        return response.read().decode()


def families(text: str) -> dict:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family, sample, /, **labels):
    found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, family.samples)
    return found[0]


def test_metrics_parse_with_the_official_parser_and_carry_exact_values(
    agent_library, fake_nvml, tmp_path
):
    require_module("prometheus_client", "pip install prometheus_client (tests/python_env.sh does)")
    port = free_port()
    host = start_host(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 10
        while "vllm_profiler_gpu_utilization_percent" not in (text := scrape(url)):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        parsed = families(text)
        process = {"pid": str(host.pid), "role": "process"}
        device = {
            "gpu": "0",
            "UUID": "GPU-feedface-0000-0000-0000-000000000000",
            "model_name": "Scraped GPU",
            "Hostname": socket.gethostname(),
            **process,
        }
        gpu = "vllm_profiler_gpu_"
        assert value(parsed[gpu + "utilization_percent"], gpu + "utilization_percent", **device) == 37
        assert value(parsed[gpu + "memory_used_bytes"], gpu + "memory_used_bytes", **device) == 2048 * MIB
        assert value(parsed[gpu + "memory_total_bytes"], gpu + "memory_total_bytes", **device) == 8192 * MIB
        assert value(parsed[gpu + "temperature_celsius"], gpu + "temperature_celsius", **device) == 55
        assert value(parsed[gpu + "power_watts"], gpu + "power_watts", **device) == 123
        assert value(parsed[gpu + "memory_controller_utilization_percent"],
                     gpu + "memory_controller_utilization_percent", **device) == 5
        steps = parsed["vllm_profiler_steps"]
        assert steps.type == "counter"
        assert value(steps, "vllm_profiler_steps_total", **process) == STEPS
        assert value(parsed["vllm_profiler_tokens"], "vllm_profiler_tokens_total",
                     **process) == 10 * STEPS
        histogram = parsed["vllm_profiler_step_duration_seconds"]
        assert histogram.type == "histogram"
        assert value(histogram, "vllm_profiler_step_duration_seconds_count", **process) == STEPS
        # Each step sleeps 30 ms: none is at or under 25 ms, all are by 250 ms.
        bucket = "vllm_profiler_step_duration_seconds_bucket"
        assert value(histogram, bucket, le="0.025", **process) == 0
        assert value(histogram, bucket, le="0.25", **process) == STEPS
        assert value(histogram, bucket, le="+Inf", **process) == STEPS
        total = value(histogram, "vllm_profiler_step_duration_seconds_sum", **process)
        assert STEPS * 0.03 <= total < STEPS * 0.25
        dropped = parsed["vllm_profiler_dropped"]
        for what in ("steps", "samples", "events"):
            assert value(dropped, "vllm_profiler_dropped_total", what=what, **process) == 0
        # The same figures in the classic text to a client that asks for it, or says nothing.
        for accept in ("text/plain; version=0.0.4", None):
            classic = scrape(url, accept)
            assert f'vllm_profiler_steps_total{{pid="{host.pid}",role="process"}} {STEPS}' in (
                classic.splitlines()), classic
            assert "# EOF" not in classic
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        out, err = stop_host(host)
    assert out == ""  # nothing after "ready", which start_host read
    assert "vllm-profiler:" not in err, err


def test_a_port_in_use_is_one_stderr_line_and_the_host_goes_on(agent_library, fake_nvml, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        host = start_host(agent_library, fake_nvml, tmp_path, addr)
        # The metrics thread tries the port on its own time: on a loaded machine that can be
        # after the 7 steps, so wait for its line (or 20 s) before the host is told to exit.
        first = _stderr_line(host, timeout_s=20)
        out, err = stop_host(host)
        err = first + err
    lines = [line for line in err.splitlines() if line.startswith("vllm-profiler:")]
    assert len(lines) == 1, err
    assert f"cannot serve Prometheus metrics on {addr}" in lines[0]
    assert out == ""  # nothing after "ready", which start_host read
    steps = read_report(tmp_path / "out", "detailed_steps", host.pid)["detailed_steps"]
    assert len(steps) == STEPS


def test_after_disable_and_enable_the_same_port_is_served_again(agent_library, fake_nvml, tmp_path):
    require_module("prometheus_client", "pip install prometheus_client (tests/python_env.sh does)")
    port = free_port()
    host = start_host(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}", REENABLE)
    try:
        # The last enable may find the port and the group's lock still held by the server the
        # disable stopped (it closes on its own thread); the new one takes both as soon as
        # they are free.
        deadline = time.time() + 5
        while True:
            try:
                text = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except urllib.error.URLError:
                assert time.time() < deadline, "the port was never served again"
                time.sleep(0.05)
        parsed = families(text)
        # One session across the three rounds: its totals keep every step.
        assert value(parsed["vllm_profiler_steps"], "vllm_profiler_steps_total",
                     pid=str(host.pid), role="process") == 6
    finally:
        out, err = stop_host(host)
    assert "vllm-profiler:" not in err, err


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: vllm-profiler
    static_configs:
      - targets: ["%s"]
"""


def test_a_real_prometheus_server_scrapes_the_agent(agent_library, fake_nvml, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        missing_tool("no prometheus binary (Debian: apt-get install prometheus; .ci/run does)")
    port, prom_port = free_port(), free_port()
    host = start_host(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}")
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG % f"127.0.0.1:{port}")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),
    )
    try:
        query = urllib.parse.urlencode({"query": 'vllm_profiler_steps_total{job="vllm-profiler"}'})
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?{query}"
        deadline = time.monotonic() + 60
        result = []
        while not result:
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    result = json.load(response)["data"]["result"]
            except OSError:
                continue
        assert [float(r["value"][1]) for r in result] == [STEPS]
        query = urllib.parse.urlencode({"query": "vllm_profiler_gpu_utilization_percent"})
        with urllib.request.urlopen(
            f"http://127.0.0.1:{prom_port}/api/v1/query?{query}", timeout=5
        ) as response:
            gpu = json.load(response)["data"]["result"]
        assert [(r["metric"]["gpu"], r["metric"]["UUID"], float(r["value"][1])) for r in gpu] == [
            ("0", "GPU-feedface-0000-0000-0000-000000000000", 37.0)]
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop_host(host)


def proc_status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f.read().splitlines())


def exchange(port: int, payload: bytes) -> bytes:
    """Sends `payload` on a new connection and reads until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:  # the server dropped bytes it never read
            pass
        return answer


HOSTILE = [
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n", b"HTTP/1.1 405 "),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", b"HTTP/1.1 200 "),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", b"HTTP/1.1 200 "),
    (b"PUT /metrics HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n", b"HTTP/1.1 405 "),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)), b"HTTP/1.1 400 "),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
    (b"GET /metrics HTTP/1.1\r\n\r\n" * 50, b"HTTP/1.1 200 "),
]


RECORDING = """
import sys, threading, time
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
monitor = VLLMPerformanceMonitor()
done, count = threading.Event(), 0
def record():
    global count
    while not done.is_set():
        with monitor.profile_inference_step(batch_size=1, num_tokens=3):
            time.sleep(0.002)
        count += 1
recorder = threading.Thread(target=record)
recorder.start()
while count == 0:
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.readline()
done.set()
recorder.join()
print("steps", count, flush=True)
"""


def send_endless_header(port: int, megabytes: int) -> None:
    """One header line of `megabytes` MB, sent until the server hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX: ")
            line = b"a" * (1 << 20)
            for _ in range(megabytes):
                s.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            return
    raise AssertionError(f"the server read a {megabytes} MB header")


def test_hostile_clients_cost_the_host_no_thread_and_bounded_memory(
    agent_library, fake_nvml, tmp_path
):
    """What issue 14 saw: 500 connections that send half a request line raised the host from 9
    to 505 threads; a 100 MB header line added 117 MB of RSS. Now the server is one thread with
    at most 16 connections of at most 8 KiB read each; a declared body is never read, and the
    endpoint answers through all of it, while the host records steps."""
    require_module("prometheus_client", "pip install prometheus_client (tests/python_env.sh does)")
    port = free_port()
    host = start_host(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}", RECORDING)
    url = f"http://127.0.0.1:{port}/metrics"
    held = []
    try:
        scrape(url)
        before = proc_status(host.pid)
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metr")
            held.append(s)
        for payload, status in HOSTILE:
            answer = exchange(port, payload)
            assert answer.startswith(status), (payload[:60], answer[:200])
            assert answer.count(b"HTTP/1.1 ") == 1, "one answer per connection"
        send_endless_header(port, 100)
        # Every 500 still open on our side: the scrape is answered all the same.
        text = scrape(url)
        during = proc_status(host.pid)
        steps = families(text)["vllm_profiler_steps"]
        assert value(steps, "vllm_profiler_steps_total", pid=str(host.pid), role="process") > 0
        assert int(during["Threads"]) == int(before["Threads"]), (before, during)
        grew_kib = int(during["VmRSS"].split()[0]) - int(before["VmRSS"].split()[0])
        assert grew_kib < 8 * 1024, f"the host grew by {grew_kib} KiB"
        # The server closed all but the newest 16 of the 500, unanswered.
        closed = 0
        for s in held:
            s.settimeout(0)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:  # closed with our half line unread
                closed += 1
            except BlockingIOError:
                pass
        assert closed >= 500 - 16, closed
    finally:
        for s in held:
            s.close()
        out, err = stop_host(host)
    assert "vllm-profiler:" not in err, err
    # The host's own output, and every step it recorded, as without the attack.
    (line,) = out.splitlines()
    recorded = int(line.removeprefix("steps "))
    summary = read_report(tmp_path / "out", "performance_summary", host.pid)
    assert summary["total_steps"] == recorded


FORKING = """
import os, sys, time
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
monitor = VLLMPerformanceMonitor()
with monitor.profile_inference_step(batch_size=1, num_tokens=1):
    pass
print("ready", flush=True)
child = os.fork()
if child == 0:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # the test reads the parent's pipes to their end
        os.dup2(null, fd)
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
sys.stdin.readline()
"""


def test_a_forked_child_closes_the_sockets_of_the_parents_server(agent_library, fake_nvml, tmp_path):
    """The child has no server thread: a listener it kept would hold the port and leave
    scrapes hanging once the parent is gone."""
    port = free_port()
    host = start_host(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}", FORKING)
    child = int(host.stdout.readline())
    try:
        scrape(f"http://127.0.0.1:{port}/metrics")
        stop_host(host)
        fds = os.listdir(f"/proc/{child}/fd")
        sockets = [fd for fd in fds if os.readlink(f"/proc/{child}/fd/{fd}").startswith("socket:")]
        assert sockets == [], sockets
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        os.kill(child, 9)


OUT_OF_FDS = """
import resource, sys, time
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
monitor = VLLMPerformanceMonitor()
with monitor.profile_inference_step(batch_size=1, num_tokens=1):
    pass
time.sleep(0.5)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(open("/dev/null"))
except OSError:
    pass
print("ready", flush=True)
sys.stdin.readline()
"""


def cpu_ticks(pid: int, thread_name: str) -> int:
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as f:
            if f.read().strip() != thread_name:
                continue
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    raise AssertionError(f"no {thread_name} thread in {pid}")


def test_out_of_fds_the_server_waits_instead_of_spinning(agent_library, fake_nvml, tmp_path):
    """accept() fails with EMFILE while a connection waits: the server backs off (it spun at
    a full core before), and is back once the host has fds again."""
    port = free_port()
    host = start_host(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}", OUT_OF_FDS)
    try:
        waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
        waiting.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        before = cpu_ticks(host.pid, "vprof-metrics")
        time.sleep(2)
        spent = cpu_ticks(host.pid, "vprof-metrics") - before
        # A spin costs about 200 ticks in 2 s (100 per second of a core); a poll every 100 ms
        # costs next to none.
        assert spent < 40, f"{spent} ticks in 2 s"
        waiting.close()
    finally:
        out, err = stop_host(host)
    assert "vllm-profiler:" not in err, err
