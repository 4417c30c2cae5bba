"""The merged trace of a multi-process run (`vllm-profiler trace DIR -o run.json`) in a trace
consumer that runs here: speedscope (npm, pinned), in the system's headless Chromium driven by
playwright. What the test reads from it: the list of profiles speedscope made, one per process
and thread, by name (`<process name> (pid P), <thread name> (tid T)`), and its console, where it
says so when an event ends outside the one it began in ("Tried to end ...", "... was still
open"). A control trace with one crossing event shows that this check fails when it should.
The PyPI `perfetto` package is not used: it needs a binary it cannot download here.

The run: stand-ins of an engine core and two workers recording steps with nested spans on two
threads each; one worker is SIGKILLed after flushing, so its part comes from the crash-safe
journal (the command recovers it first)."""

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import missing_tool, mode_env, require_module

SPEEDSCOPE = "speedscope-1.25.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-profiler-tests"

RECORDER = """
import sys, threading
from vllm_profiler import _native
lib = _native.library()
role, rank = sys.argv[1], int(sys.argv[2])
_native.check(lib.vllm_profiler_set_role(role.encode(), rank))
_native.enable()

def record(steps):
    for i in range(steps):
        step = lib.vllm_profiler_step_begin(2, 8)
        layer = lib.vllm_profiler_span_begin(b"model.layers.0")
        attn = lib.vllm_profiler_span_begin(b"model.layers.0.self_attn")
        _native.check(lib.vllm_profiler_span_end(attn))
        _native.check(lib.vllm_profiler_span_end(layer))
        _native.check(lib.vllm_profiler_step_end(step))

side = threading.Thread(target=record, args=(3,), name="side")
side.start()
record(5)
side.join()
_native.check(lib.vllm_profiler_flush())
print("ready", flush=True)
sys.stdin.readline()
"""

STANDINS = [("engine_core", -1), ("worker", 0), ("worker", 1)]
NOISE = ("GL Driver Message", "WebGL", "speedscope v", "Importing as", "import:")


@pytest.fixture(scope="session")
def speedscope():
    """speedscope's release files (index.html and its bundle), from the npm registry once."""
    release = CACHE / SPEEDSCOPE / "package" / "dist" / "release"
    if not (release / "index.html").is_file():
        npm = shutil.which("npm")
        if npm is None:
            missing_tool("no npm to fetch speedscope (Debian: apt-get install npm)")
        target = CACHE / SPEEDSCOPE
        target.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run([npm, "pack", SPEEDSCOPE.replace("-", "@", 1), "--silent"],
                                cwd=target, capture_output=True, text=True, timeout=300)
        assert packed.returncode == 0, packed.stderr
        with tarfile.open(target / packed.stdout.strip().splitlines()[-1]) as tar:
            tar.extractall(target, filter="data")
    return release


def load_in_speedscope(release, trace_path):
    """(profile names speedscope lists, its console messages but the renderer's noise)."""
    require_module("playwright", "pip install playwright (tests/python_env.sh does)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_tool("no chromium (Debian: apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    served = trace_path.parent / "served"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(release, served)
    shutil.copy(trace_path, served / "run.json")
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            try:
                page = browser.new_page()
                console = []
                page.on("console", lambda m: console.append(m.text))
                page.goto(f"{base}/index.html#profileURL={base}/run.json")
                # The toolbar names the first profile and the count: "<name> (1/N)".
                page.wait_for_selector("text=/\\(1\\/\\d+\\)/", timeout=60_000)
                page.click("text=/\\(1\\/\\d+\\)/")
                rows = page.locator("table tr").all_inner_texts()
                names = [r.split("\t")[1] for r in rows if r.split("\t")[0].strip().isdigit()]
            finally:
                browser.close()
    finally:
        server.shutdown()
    return names, [m for m in console if not any(n in m for n in NOISE)]


def assert_nested(events):
    """On each thread, every complete event ends within the one it starts in."""
    threads = {}
    for e in events:
        if e["ph"] == "X":
            threads.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for key, intervals in threads.items():
        intervals.sort(key=lambda i: (i[0], -i[1]))
        open_ends = []
        for start, end in intervals:
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            # A quarter of a microsecond: what a double keeps of Unix microseconds.
            assert not open_ends or end <= open_ends[-1] + 0.5, (key, start, end, open_ends[-1])
            open_ends.append(end)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def record_run(agent_library, tmp_path):
    out = tmp_path / "reports"
    procs = []
    for role, rank in STANDINS:
        env = mode_env("preloaded", agent_library)
        env.update({"VLLM_PROFILING_OUTPUT_DIR": str(out), "VLLM_ENABLE_GPU_MONITORING": "0",
                    "VLLM_PROFILING_RUN_ID": "consumer-test"})
        procs.append(subprocess.Popen([sys.executable, "-c", RECORDER, role, str(rank)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    killed = procs[2]
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    for proc in procs[:2]:
        _, err = proc.communicate(input="\n", timeout=60)
        assert proc.returncode == 0, err
    return out, procs


def test_the_merged_trace_opens_in_speedscope_one_profile_per_process_and_thread(
    agent_library, cli, speedscope, tmp_path
):
    out, procs = record_run(agent_library, tmp_path)
    merged = tmp_path / "run.json"
    done = subprocess.run([cli, "trace", str(out), "-o", str(merged)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Its summary, steps and trace (GPU monitoring is off): every step it flushed.
    assert f"pid {procs[2].pid}: wrote 3 reports (8 steps)" in done.stderr, done.stderr
    events = json.loads(merged.read_text())["traceEvents"]
    # The processes of the run (one run: they were given its id), named by role.
    names = {e["pid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(names.values()) == ["engine_core", "worker rank 0", "worker rank 1"]
    recorded = {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"}
    assert len(recorded) == 6, recorded  # two threads in each of three processes
    assert_nested(events)
    expected = sorted(f"{names[pid]} (pid {pid}), {threads[(pid, tid)]} (tid {tid})"
                      for pid, tid in recorded)
    listed, console = load_in_speedscope(speedscope, merged)
    assert sorted(listed) == expected
    assert console == [], console

    # The control: one event that crosses its parent's end, and speedscope says so.
    step = next(e for e in events if e.get("cat") == "step")
    crossing = dict(step, name="crossing", ts=step["ts"] + step["dur"] / 2, dur=step["dur"])
    crossing.pop("args", None)
    bad = tmp_path / "crossing.json"
    bad.write_text(json.dumps({"traceEvents": events + [crossing]}))
    _, console = load_in_speedscope(speedscope, bad)
    assert any("Tried to end" in m or "was still open" in m for m in console), console
