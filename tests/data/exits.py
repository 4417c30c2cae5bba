"""Python side of tests/exits_e2e.rs: how a host ends (exit codes, signals, os._exit, abort)
and how it makes processes (fork, multiprocessing), with or without the agent preloaded.

Usage: exits.py MODE. Records steps through ctypes only when VLLM_ENABLE_PROFILING is set, so
that the same script runs the same way without the agent. Prints only what a mode says.
"""

import ctypes
import importlib.util
import os
import signal
import sys
import threading
import time

PROFILED = bool(os.environ.get("VLLM_ENABLE_PROFILING"))


def load_binding():
    """The package's ctypes binding, vllm_profiler/_native.py (the package is found on
    PYTHONPATH, which the test harness sets), loaded without importing the package: its
    __init__ installs the multiprocessing exit hook, which would give the os._exit children
    below final reports, and this script checks what the agent alone leaves them."""
    package = importlib.util.find_spec("vllm_profiler")  # finds; imports nothing
    path = os.path.join(package.submodule_search_locations[0], "_native.py")
    spec = importlib.util.spec_from_file_location("vllm_profiler_native", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native = load_binding()
_agent = None


def agent():
    """The preloaded agent, looked up once: a fork child never takes the binding's lock,
    which another thread of its parent may have held as it forked. Every call lets the GIL
    go (as a plain ctypes.CDLL does), so that another thread can fork while one is inside
    the agent."""
    global _agent
    if _agent is None:
        _agent = native.releasing_gil(native.library())
    return _agent


def last_error():
    """The calling thread's last error, through the looked-up agent (no lock taken)."""
    buf = ctypes.create_string_buffer(1024)
    agent().vllm_profiler_last_error(buf, len(buf))
    return buf.value.decode("utf-8", "replace")


def record(steps, first=0):
    """Records `steps` steps with batch sizes first + 1, first + 2, ..."""
    if not PROFILED:
        time.sleep(0.003 * steps)
        return
    lib = agent()
    for i in range(first, first + steps):
        step = lib.vllm_profiler_step_begin(i + 1, 10 * (i + 1))
        assert step != 0, last_error()
        span = lib.vllm_profiler_span_begin(b"model")
        time.sleep(0.002)
        assert lib.vllm_profiler_span_end(span) == 0
        assert lib.vllm_profiler_step_end(step) == 0, last_error()


def hang():
    # Never reached when the signal does its default action.
    time.sleep(30)
    print("still alive", flush=True)


def on_term(signum, frame):
    print("handled", signum, flush=True)
    sys.exit(7)


def mp_child(first):
    record(2, first)
    # fork and forkserver children end with os._exit (no exit handler runs): what they leave
    # is the last periodic export, so live past one export interval.
    time.sleep(1.0)


def main_mp(method):
    import multiprocessing as mp

    ctx = mp.get_context(method)
    record(3)
    procs = [ctx.Process(target=mp_child, args=(100 + 10 * i,)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0, p.exitcode
    # A semaphore needs the resource tracker (a spawned helper that records nothing).
    lock = ctx.Lock()
    with lock:
        pass
    helpers = []
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    if tracker:
        helpers.append(tracker)
    if method == "forkserver":
        from multiprocessing import forkserver

        server = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if server:
            helpers.append(server)
    print("ok", method, flush=True)
    print("PIDS", *[p.pid for p in procs], flush=True)
    print("HELPERS", *helpers, flush=True)


def main_fork_threaded():
    stop = threading.Event()

    def background():
        i = 0
        while not stop.is_set():
            record(1, 1000 + i)
            i += 1

    t = threading.Thread(target=background)
    t.start()
    record(2)
    children = []
    for n in range(5):
        child = os.fork()
        if child == 0:
            record(2, 100 + 10 * n)
            sys.exit(0)  # runs exit handlers: the child writes its own files
        children.append(child)
    for child in children:
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    stop.set()
    t.join()
    record(1, 2)
    print("ok", flush=True)
    print("PIDS", *children, flush=True)


def main_fork_sigterm():
    record(3)
    children = []
    for records in (True, False):
        child = os.fork()
        if child == 0:
            if records:
                record(2, 100)
                # The child's sampler takes its first sample (an export before it has none
                # writes no gpu_history: on a loaded machine that raced).
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)
            hang()
            os._exit(0)
        children.append(child)
    for child in children:
        _, status = os.waitpid(child, 0)
        print("child ended by", os.waitstatus_to_exitcode(status), flush=True)
    print("PIDS", *children, flush=True)


BLOCKED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM)


def main_blocked_signals():
    """A critical section that blocks signals, sent to the process while the agent's threads
    run, then takes them with sigtimedwait (as a signalfd reader does): each one waits for the
    host, pending, whatever threads the agent runs."""
    record(3)
    time.sleep(0.3)  # the agent's threads are up and running
    signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    for sig in BLOCKED:
        os.kill(os.getpid(), sig)
    time.sleep(0.3)
    print("pending", sorted(s.name for s in signal.sigpending()), flush=True)
    for _ in BLOCKED:
        info = signal.sigtimedwait(BLOCKED, 5)
        print("taken", None if info is None else signal.Signals(info.si_signo).name, flush=True)
    record(2, 3)
    print("done", flush=True)


ASYNCHRONOUS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGPIPE, signal.SIGALRM, signal.SIGTERM, signal.SIGCHLD, signal.SIGWINCH)


def main_thread_masks():
    """Prints, for each thread but this one (every other is the agent's, or a crate's it
    started), its name and the asynchronous signals it leaves unblocked."""
    record(3)
    time.sleep(0.5)  # every thread is up: collector, sampler, signals, metrics and its server
    me = threading.get_native_id()
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        if tid == me:
            continue
        with open(f"/proc/self/task/{tid}/comm") as f:
            name = f.read().strip()
        with open(f"/proc/self/task/{tid}/status") as f:
            blocked = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
        open_to = [sig.name for sig in ASYNCHRONOUS if not blocked & (1 << (sig - 1))]
        print("thread", name, "unblocked", open_to, flush=True)


def main():
    mode = sys.argv[1]
    if mode == "normal":
        record(5)
        print("done", flush=True)
    elif mode == "sys-exit":
        record(5)
        print("exiting 3", flush=True)
        sys.exit(3)
    elif mode == "exception":
        record(5)
        print("raising", flush=True)
        raise RuntimeError("boom")
    elif mode == "sigterm-default":
        record(5)
        print("killing", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        hang()
    elif mode == "sigint-default":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        record(5)
        time.sleep(1.0)  # at least one periodic export
        print("killing", flush=True)
        os.kill(os.getpid(), signal.SIGINT)
        hang()
    elif mode == "sigterm-handler":
        signal.signal(signal.SIGTERM, on_term)
        record(5)
        print("killing", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        hang()
    elif mode == "sigterm-save-restore":
        # What uvicorn does: save the handler, put one in, put the saved one back.
        saved = signal.getsignal(signal.SIGTERM)
        print("saved SIG_DFL", saved is signal.SIG_DFL, flush=True)
        signal.signal(signal.SIGTERM, on_term)
        record(5)
        signal.signal(signal.SIGTERM, saved)
        time.sleep(1.0)  # past the journal's bound: every step is on disk
        print("restored, killing", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        hang()
    elif mode == "chdir-then-record":
        os.chdir(sys.argv[2])
        if sys.argv[3:] == ["enable"] and PROFILED:
            assert agent().vllm_profiler_enable(None) == 0
        record(5)
        print("done", flush=True)
    elif mode == "os-exit":
        record(5)
        time.sleep(1.0)  # at least one periodic export
        print("leaving", flush=True)
        os._exit(0)
    elif mode == "abort":
        record(5)
        time.sleep(1.0)
        print("aborting", flush=True)
        os.abort()
    elif mode == "thread-masks":
        main_thread_masks()
    elif mode == "blocked-signals":
        main_blocked_signals()
    elif mode == "fork-sigterm":
        main_fork_sigterm()
    elif mode == "fork-threaded":
        main_fork_threaded()
    elif mode.startswith("mp-"):
        main_mp(mode[3:])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
