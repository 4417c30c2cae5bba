"""The truth the real-vLLM tests compare the profiler with, kept by the tests, not by the
package: in every process that runs vLLM's engine, each `EngineCore.step` (or
`step_with_batch_queue`) call appends one JSON line to `$VLLM_TRUTH_DIR/truth_<pid>.jsonl`:
the batch size and tokens its `schedule()` returned (0 and 0 when it scheduled nothing), and
the Unix time it returned at. Each line is flushed as it is written, so it outlives a SIGKILL.

It finds vLLM's engine through a meta path finder of its own that delegates to the rest of
`sys.meta_path`, the way the package's does: the two must compose (the package's finder has a
re-entrancy guard for exactly this).

Active only where VLLM_TRUTH_DIR is set.
"""

import functools
import json
import os
import sys
import threading
import time

TARGET = "vllm.v1.engine.core"
_local = threading.local()
_out = None


def _write(record):
    global _out
    if _out is None:
        path = os.path.join(os.environ["VLLM_TRUTH_DIR"], f"truth_{os.getpid()}.jsonl")
        _out = open(path, "a", buffering=1, encoding="utf-8")
    _out.write(json.dumps(record) + "\n")
    _out.flush()


def _wrap_schedule(scheduler_class):
    schedule = scheduler_class.schedule
    if getattr(schedule, "_truth", False):
        return

    @functools.wraps(schedule)
    def truth_schedule(self, *args, **kwargs):
        output = schedule(self, *args, **kwargs)
        counts = getattr(_local, "counts", None)
        if counts is not None:
            counts[0] += len(output.num_scheduled_tokens)
            counts[1] += int(output.total_num_scheduled_tokens)
        return output

    truth_schedule._truth = True
    scheduler_class.schedule = truth_schedule


def _wrap_step(step):
    @functools.wraps(step)
    def truth_step(self, *args, **kwargs):
        _wrap_schedule(type(self.scheduler))
        _local.counts = [0, 0]
        start = time.time()
        try:
            return step(self, *args, **kwargs)
        finally:
            batch, tokens = _local.counts
            _local.counts = None
            _write({"start": start, "end": time.time(), "batch": batch, "tokens": tokens})

    return truth_step


def _patch(module):
    engine = module.EngineCore
    for name in ("step", "step_with_batch_queue"):
        if callable(getattr(engine, name, None)):
            setattr(engine, name, _wrap_step(getattr(engine, name)))


class _Loader:
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _patch(module)


class _DelegatingFinder:
    """Asks every finder of sys.meta_path, itself excepted, as the package's finder does
    (with a guard of its own, so that the truth is patched in once)."""

    busy = False

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET or self.busy:
            return None
        self.busy = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    spec.loader = _Loader(spec.loader)
                    return spec
            return None
        finally:
            self.busy = False


if os.environ.get("VLLM_TRUTH_DIR"):
    sys.meta_path.insert(0, _DelegatingFinder())
