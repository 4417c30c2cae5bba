"""Host of tests/config_e2e.rs and tests/faults_e2e.rs: a program that records steps through
the preloaded agent, if any, and behaves the same without it.

Usage: host.py steps N [SECONDS]   records N steps (batch sizes 1..N), each SECONDS long
                                   (default 0.001), prints "host done N", exits with status 5
       host.py tight SECONDS       records 1 ms steps back to back for SECONDS, prints
                                   "host done", prints "recorded N" on stderr, exits with status 5
Without the agent preloaded (or with it off) nothing is recorded and the output is the same.
The package's binding comes from python/ on PYTHONPATH (the test harness sets it).
"""

import ctypes
import sys
import time

from vllm_profiler import _native


def agent():
    if hasattr(ctypes.CDLL(None), "vllm_profiler_step_begin"):
        return _native.releasing_gil(_native.library())  # the preloaded one, GIL let go
    return None


def step(lib, batch, seconds):
    handle = lib.vllm_profiler_step_begin(batch, 10 * batch) if lib else 0
    span = lib.vllm_profiler_span_begin(b"model") if handle else 0
    if seconds:
        time.sleep(seconds)
    if span:
        assert lib.vllm_profiler_span_end(span) == 0, _native.last_error()
    if handle:
        assert lib.vllm_profiler_step_end(handle) == 0, _native.last_error()
    return 1 if handle else 0


def main():
    mode = sys.argv[1]
    lib = agent()
    if mode == "steps":
        n = int(sys.argv[2])
        seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.001
        for i in range(n):
            step(lib, i + 1, seconds)
        print("host done", n, flush=True)
    elif mode == "tight":
        end = time.monotonic() + float(sys.argv[2])
        recorded = 0
        while time.monotonic() < end:
            recorded += step(lib, 1, 0.001)
        print("host done", flush=True)
        print("recorded", recorded, file=sys.stderr, flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.exit(5)


main()
