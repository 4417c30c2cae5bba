"""A real uvicorn server (from PyPI; vLLM's API server runs on it) stopped by SIGTERM, with and
without the agent preloaded: the same exit status and stdout.

uvicorn saves each signal's handler as it starts (`signal.signal` returns it) and restores it
when it stops, then raises the signal again. With the agent's SIGTERM handler installed
before Python started, Python read it as `None`, the restore raised TypeError, and the server
exited 1 with a traceback instead of dying by SIGTERM.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import clean_env, free_port, require_module

APP_DIR = Path(__file__).resolve().parent / "uvicorn_app"




def serve_then_sigterm(env):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--no-access-log"],
        cwd=APP_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            assert server.poll() is None, server.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.read() == b"ok"
                break
            except OSError:
                assert time.time() < deadline, "uvicorn did not come up"
                time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return server.returncode, stdout, stderr


def test_uvicorn_stopped_by_sigterm_ends_as_without_the_agent(agent_library, tmp_path):
    require_module("uvicorn", "uvicorn is not installed (bash tests/python_env.sh)")
    plain = serve_then_sigterm(clean_env())
    env = clean_env()
    env.update({"LD_PRELOAD": str(agent_library), "VLLM_ENABLE_PROFILING": "1",
                "VLLM_PROFILING_OUTPUT_DIR": str(tmp_path)})
    profiled = serve_then_sigterm(env)
    assert plain[0] == -signal.SIGTERM, plain
    assert profiled[:2] == plain[:2], profiled[2][-3000:]
    assert plain[1] == "app started\napp stopped\n"
    assert "Traceback" not in profiled[2], profiled[2][-3000:]
