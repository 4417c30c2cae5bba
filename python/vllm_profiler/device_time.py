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


class DeviceTimer:
    """Event pairs for spans or steps of the agent: `begin()` where one begins, `end(handle,
    start)` once it has ended with that handle, `resolve()` to hand over what the GPU has
    finished. `setter` is the agent's `..._set_gpu_duration(handle, ns)`."""

    def __init__(self, setter: Callable[[int, int], int], factory: EventFactory) -> None:
        self._set = setter
        self._factory = factory
        self._local = threading.local()
        self.dropped = 0

    def _state(self) -> Tuple[List[Any], Deque[Tuple[int, Any, Any]]]:
        local = self._local
        try:
            return local.pool, local.pending
        except AttributeError:
            local.pool, local.pending = [], deque()
            return local.pool, local.pending

    def _recorded(self, pool: List[Any]) -> Any:
        event = pool.pop() if pool else self._factory()
        event.record()
        return event

    def begin(self) -> Any:
        """Records and returns the start event."""
        return self._recorded(self._state()[0])

    def end(self, handle: int, start: Any) -> None:
        """Records the end event of the span or step `handle`, which has just ended."""
        pool, pending = self._state()
        end = self._recorded(pool)
        if not handle:
            self._release(pool, start, end)
            return
        if len(pending) >= MAX_PENDING:
            _, old_start, old_end = pending.popleft()
            self.dropped += 1
            self._release(pool, old_start, old_end)
        pending.append((handle, start, end))

    def discard(self, start: Any) -> None:
        """Gives back a start event whose span never ended."""
        pool, _ = self._state()
        if len(pool) < MAX_POOL:
            pool.append(start)

    def resolve(self, wait: bool = False) -> int:
        """Hands over, in order, the pairs the GPU has finished (all of them, waiting for the
        GPU, when `wait`); returns how many."""
        pool, pending = self._state()
        done = 0
        while pending:
            handle, start, end = pending[0]
            if wait:
                end.synchronize()
            elif not end.query():
                break
            pending.popleft()
            nanoseconds = int(start.elapsed_time(end) * 1e6)  # elapsed_time is in ms
            if nanoseconds >= 0:
                self._set(handle, nanoseconds)
            self._release(pool, start, end)
            done += 1
        return done

    def pending(self) -> int:
        return len(self._state()[1])

    def _release(self, pool: List[Any], *events: Any) -> None:
        for event in events:
            if len(pool) < MAX_POOL:
                pool.append(event)
