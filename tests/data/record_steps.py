"""Python side of tests/agent_e2e.rs: drives libvllm_profiler.so through ctypes.

Usage: record_steps.py MODE [ARGS...]; prints only what a mode says it prints. The package's
binding comes from python/ on PYTHONPATH (the test harness sets it).
"""

import os
import sys
import time

from vllm_profiler import _native



def agent(path=None):
    """The agent (preloaded, or loaded from `path`), every call letting the GIL go as a plain
    ctypes.CDLL does: this driver's threads record concurrently."""
    return _native.releasing_gil(_native.load(path) if path else _native.library())

def record(lib, steps, first=0):
    for i in range(first, first + steps):
        step = lib.vllm_profiler_step_begin(i + 1, 10 * (i + 1))
        assert step != 0, _native.last_error()
        assert step > 2**32, "handles are 64-bit and must not be truncated"
        model = lib.vllm_profiler_span_begin(b"model")
        layer0 = lib.vllm_profiler_span_begin(b"model.layers.0")
        time.sleep(0.002)
        assert lib.vllm_profiler_span_end(layer0) == 0
        layer1 = lib.vllm_profiler_span_begin(b"model.layers.1")
        time.sleep(0.001)
        assert lib.vllm_profiler_span_end(layer1) == 0
        assert lib.vllm_profiler_span_end(model) == 0
        assert lib.vllm_profiler_step_end(step) == 0, _native.last_error()


def main():
    mode = sys.argv[1]
    if mode == "record":
        # Preloaded; started by the environment.
        lib = agent()
        record(lib, int(sys.argv[2]))
    elif mode == "cdll-enable":
        # Loaded with ctypes.CDLL (constructor under the loader lock), then enabled explicitly.
        lib = agent(sys.argv[2])
        config = sys.argv[3].encode() if len(sys.argv) > 3 else None
        rc = lib.vllm_profiler_enable(config)
        assert rc == 0, _native.last_error()
        assert lib.vllm_profiler_is_enabled() == 1
        record(lib, 4)
        s = _native.summary()
        assert s["total_steps"] == 4, s
        assert _native.summary(2)["total_steps"] == 2
        assert lib.vllm_profiler_disable() == 0, _native.last_error()
    elif mode == "timed":
        # Steps that each last SECONDS, so that GPU samples land inside them.
        lib = agent()
        steps, seconds = int(sys.argv[2]), float(sys.argv[3])
        for i in range(steps):
            step = lib.vllm_profiler_step_begin(1, 1)
            assert step != 0, _native.last_error()
            time.sleep(seconds)
            assert lib.vllm_profiler_step_end(step) == 0, _native.last_error()
    elif mode == "periodic":
        lib = agent()
        record(lib, int(sys.argv[2]))
        print("recorded", flush=True)
        time.sleep(60)
    elif mode == "until-killed":
        # Steps until killed, each logged to TRUTH (its number and when it ended) as it ends;
        # a line flushed is on disk whatever kills the process.
        lib = agent()
        with open(sys.argv[2], "w", buffering=1) as truth:
            i = 0
            while True:
                step = lib.vllm_profiler_step_begin(i % 7 + 1, i + 1)
                span = lib.vllm_profiler_span_begin(b"model.layers.0")
                time.sleep(0.002)
                lib.vllm_profiler_span_end(span)
                assert lib.vllm_profiler_step_end(step) == 0, _native.last_error()
                truth.write(f"{i + 1} {time.time()}\n")
                i += 1
    elif mode == "flush-then-wait":
        # N steps, made crash-safe at once, then waits to be killed.
        lib = agent()
        record(lib, int(sys.argv[2]))
        assert lib.vllm_profiler_flush() == 0, _native.last_error()
        print("flushed", flush=True)
        time.sleep(60)
    elif mode == "flush-after-disable":
        # Loaded, enabled, recorded, disabled, then flushed: prints the output dir after each.
        lib = agent(sys.argv[2])
        out = sys.argv[3]
        config = '{"output_dir": "%s", "enable_gpu_monitoring": false}' % out
        assert lib.vllm_profiler_enable(config.encode()) == 0
        record(lib, 5)
        assert lib.vllm_profiler_flush() == 0
        print(" ".join(sorted(os.listdir(out))), flush=True)
        assert lib.vllm_profiler_disable() == 0
        assert lib.vllm_profiler_flush() == 0
        print(" ".join(sorted(os.listdir(out))), flush=True)
    elif mode == "fork-child-outlives":
        # Records, makes its journal current, forks a child that only sleeps, then waits to be
        # killed: the child must not keep the parent's journal looking alive.
        lib = agent()
        record(lib, 6)
        assert lib.vllm_profiler_flush() == 0
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        print(f"child {child}", flush=True)
        time.sleep(60)
    elif mode == "fork":
        lib = agent()
        record(lib, 3)
        child = os.fork()
        if child == 0:
            record(lib, 2, first=100)
            sys.exit(0)  # runs exit handlers: the child writes its own files
        quiet = os.fork()
        if quiet == 0:
            sys.exit(0)  # records nothing: writes nothing
        for pid in (child, quiet):
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        record(lib, 1, first=3)
        print(child, quiet, flush=True)
    elif mode == "finish-then-exit":
        # vllm_profiler_finish writes the final reports; then os._exit, which runs no hook.
        lib = agent()
        record(lib, 3)
        first, second = lib.vllm_profiler_finish(), lib.vllm_profiler_finish()
        late = lib.vllm_profiler_step_begin(1, 1)
        print(first, second, late, flush=True)
        os._exit(0)
    elif mode == "fork-and-leave":
        # Records STEPS steps, forks a child that sleeps SECONDS without recording, and leaves
        # at once with os._exit (no exit handler runs, so nothing releases the agent's locks
        # on the way out), without waiting for it; prints the child's pid.
        lib = agent()
        record(lib, int(sys.argv[2]))
        child = os.fork()
        if child == 0:
            os.closerange(0, 3)  # the test reads the parent's output to its end
            time.sleep(float(sys.argv[3]))
            os._exit(0)
        print(child, flush=True)
        os._exit(0)
    else:
        raise SystemExit(f"unknown mode {mode}")


main()
