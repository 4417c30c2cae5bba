"""Device time of spans and steps, from pairs of CUDA events, resolved without a sync.

On a GPU, the host time of a layer (`duration_ms`) is the time taken to launch its kernels:
CUDA runs them later, asynchronously. A `DeviceTimer` records a `torch.cuda.Event` on the
current stream where a span or step begins and another where it ends; once the GPU is past the
end event (`query()`, which never waits), the pair's elapsed time is handed to the agent for
that ended span or step (`vllm_profiler_span_set_gpu_duration`, `..._step_set_gpu_duration`),
which adds it as `gpu_duration_ms`. Pairs are resolved in order at the next `resolve()`: in
practice at the start of the next forward or step, when vLLM has synchronised on the previous
one's sampled tokens. Events are reused from a pool.

A handle names a span of the thread that ended it, so each thread keeps its own pairs. Under
CUDA graphs no hook runs during replay: a graph's layers have no device time (the kernel level
shows the graph's kernels).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

# Pairs waiting per thread; past it the oldest are let go (their spans keep no device time).
MAX_PENDING = 8192
# Events kept for reuse per thread.
MAX_POOL = 2 * MAX_PENDING

EventFactory = Callable[[], Any]


def cuda_event_factory(model: Any = None) -> Optional[EventFactory]:
    """A maker of timing CUDA events when torch has CUDA (or ROCm) and `model`, if given, has
    a parameter on it; else None: on CPU there is no device time to take."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        if model is not None and not any(p.is_cuda for p in model.parameters()):
            return None
    except Exception:  # noqa: BLE001 - no torch, no CUDA: host time only
        return None
    return lambda: torch.cuda.Event(enable_timing=True)


def cuda_capturing() -> Optional[Callable[[], bool]]:
    """torch's "is the current stream capturing a CUDA graph": events recorded into a capture
    cannot be queried, so no pair is taken then."""
    try:
        import torch

        return getattr(torch.cuda, "is_current_stream_capturing", None)
    except Exception:  # noqa: BLE001
        return None


# The largest duration handed over, in ns: the agent refuses 2**63 and more.
_MAX_NS = (1 << 63) - 1


class DeviceTimer:
    """Event pairs for spans or steps of the agent: `begin()` where one begins, `end(handle,
    start)` once it has ended with that handle, `resolve()` to hand over what the GPU has
    finished. `setter` is the agent's `..._set_gpu_duration(handle, ns)`.

    Nothing here raises into the host: an event that cannot be made, recorded, queried or
    measured costs that span its device time only (host time is the agent's, apart)."""

    def __init__(
        self,
        setter: Callable[[int, int], int],
        factory: EventFactory,
        capturing: Optional[Callable[[], bool]] = None,
    ) -> None:
        self._set = setter
        self._factory = factory
        self._capturing = capturing
        self._local = threading.local()
        self.dropped = 0
        # Durations the agent refused (a span ended more than 4096 spans before, say).
        self.refused = 0

    def _state(self) -> Tuple[List[Any], Deque[Tuple[int, Any, Any]]]:
        local = self._local
        try:
            return local.pool, local.pending
        except AttributeError:
            local.pool, local.pending, local.stack = [], deque(), []
            return local.pool, local.pending

    def stack(self) -> List[Any]:
        """This thread's open timed spans, for the hooks that use this timer alone."""
        try:
            stack: List[Any] = self._local.stack
        except AttributeError:
            self._state()
            stack = self._local.stack
        return stack

    def _recorded(self, pool: List[Any]) -> Any:
        try:
            if self._capturing is not None and self._capturing():
                return None
            event = pool.pop() if pool else self._factory()
            event.record()
            return event
        except Exception:  # noqa: BLE001 - this span goes without device time
            return None

    def begin(self) -> Any:
        """Records and returns the start event (None when none could be)."""
        return self._recorded(self._state()[0])

    def end(self, handle: int, start: Any) -> None:
        """Records the end event of the span or step `handle`, which has just ended."""
        if start is None:
            return
        pool, pending = self._state()
        end = self._recorded(pool)
        if not handle or end is None:
            self._release(pool, start, end)
            return
        if len(pending) >= MAX_PENDING:
            _, old_start, old_end = pending.popleft()
            self.dropped += 1
            self._release(pool, old_start, old_end)
        pending.append((handle, start, end))

    def discard(self, start: Any) -> None:
        """Gives back a start event whose span never ended."""
        if start is not None:
            self._release(self._state()[0], start)

    def resolve(self, wait: bool = False) -> int:
        """Hands over, in order, the pairs the GPU has finished (all of them, waiting for the
        GPU, when `wait`); returns how many."""
        pool, pending = self._state()
        done = 0
        while pending:
            handle, start, end = pending[0]
            try:
                if wait:
                    end.synchronize()
                elif not end.query():
                    break
                milliseconds = float(start.elapsed_time(end))
            except Exception:  # noqa: BLE001 - a pair that cannot be measured is let go
                milliseconds = float("nan")
            pending.popleft()
            nanoseconds = milliseconds * 1e6
            if 0 <= nanoseconds <= _MAX_NS:  # False for NaN
                if self._set(handle, int(nanoseconds)) != 0:
                    self.refused += 1
            self._release(pool, start, end)
            done += 1
        return done

    def pending(self) -> int:
        return len(self._state()[1])

    def _release(self, pool: List[Any], *events: Any) -> None:
        for event in events:
            if event is not None and len(pool) < MAX_POOL:
                pool.append(event)
