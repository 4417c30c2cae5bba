"""A stand-in for vLLM's `vllm/v1/engine/core.py`, for mechanism tests of the zero-code hook:
the same module path, class and method names and signatures as vLLM's current V1 engine
(`EngineCore.step` and `EngineCore.step_with_batch_queue`, `self.step_fn` bound in
`__init__`, `self.scheduler.schedule(self._should_throttle_prefills())` returning a
`SchedulerOutput` with `num_scheduled_tokens` and `total_num_scheduled_tokens`,
`self.model_executor.execute_model(scheduler_output, non_block=True)` returning a future).

Without a model runner, "executing" a batch sleeps a little per token, so that this module
needs no torch."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class SchedulerOutput:
    num_scheduled_tokens: Dict[str, int] = field(default_factory=dict)
    total_num_scheduled_tokens: int = 0


@dataclass
class Request:
    request_id: str
    token_ids: List[int]
    max_tokens: int
    num_computed_tokens: int = 0
    output_token_ids: List[int] = field(default_factory=list)


@dataclass
class EngineCoreOutputs:
    finished: List[Request] = field(default_factory=list)


class Scheduler:
    """Continuous batching: up to `max_num_seqs` running requests; a new request's prompt
    is prefilled whole, then each running request decodes one token per step. A request
    whose batch is still in flight (batch queue) is not scheduled again."""

    def __init__(self, max_num_seqs: int = 4) -> None:
        self.max_num_seqs = max_num_seqs
        self.waiting: List[Request] = []
        self.running: Dict[str, Request] = {}
        self.in_flight: set = set()

    def add_request(self, request: Request) -> None:
        self.waiting.append(request)

    def has_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        scheduled: Dict[str, int] = {}
        for request_id, request in self.running.items():
            if request_id not in self.in_flight:
                scheduled[request_id] = len(request.token_ids) - request.num_computed_tokens
        while self.waiting and len(self.running) < self.max_num_seqs and not throttle_prefills:
            request = self.waiting.pop(0)
            self.running[request.request_id] = request
            scheduled[request.request_id] = len(request.token_ids)
        self.in_flight.update(scheduled)
        return SchedulerOutput(scheduled, sum(scheduled.values()))

    def update_from_output(self, scheduler_output: SchedulerOutput, model_output) -> Dict[int, EngineCoreOutputs]:
        finished = []
        for request_id, count in scheduler_output.num_scheduled_tokens.items():
            self.in_flight.discard(request_id)
            request = self.running[request_id]
            request.num_computed_tokens += count
            token = model_output.sampled_token_ids.get(request_id, 0)
            request.output_token_ids.append(token)
            request.token_ids.append(token)
            if len(request.output_token_ids) >= request.max_tokens:
                finished.append(self.running.pop(request_id))
        return {0: EngineCoreOutputs(finished)}


@dataclass
class SleepOutput:
    sampled_token_ids: Dict[str, int] = field(default_factory=dict)


class Executor:
    """`execute_model(scheduler_output, non_block=True)` returns a future, as vLLM's does."""

    def __init__(self, model_runner=None, requests: Optional[Dict[str, Request]] = None) -> None:
        self.model_runner = model_runner
        self.requests = requests if requests is not None else {}

    def execute_model(self, scheduler_output: SchedulerOutput, non_block: bool = False):
        if self.model_runner is not None:
            tokens = {rid: self.requests[rid].token_ids for rid in scheduler_output.num_scheduled_tokens}
            output = self.model_runner.execute_model(scheduler_output, tokens)
        else:
            time.sleep(0.0005 * scheduler_output.total_num_scheduled_tokens / 8 + 0.0005)
            output = SleepOutput({rid: 7 for rid in scheduler_output.num_scheduled_tokens})
        if not non_block:
            return output
        future: Future = Future()
        future.set_result(output)
        return future


class EngineCore:
    def __init__(self, max_num_seqs: int = 4, model_runner=None, batch_queue_size: int = 1) -> None:
        self.scheduler = Scheduler(max_num_seqs)
        self.requests: Dict[str, Request] = {}
        self.model_executor = Executor(model_runner, self.requests)
        self.batch_queue_size = batch_queue_size
        self.batch_queue = deque(maxlen=batch_queue_size) if batch_queue_size > 1 else None
        self.step_fn = self.step if self.batch_queue is None else self.step_with_batch_queue

    def add_request(self, request_id: str, prompt_token_ids: List[int], max_tokens: int) -> None:
        request = Request(request_id, list(prompt_token_ids), max_tokens)
        self.requests[request_id] = request
        self.scheduler.add_request(request)

    def _should_throttle_prefills(self) -> bool:
        return False

    def step(self) -> tuple:
        """Schedule, execute, and make output."""
        if not self.scheduler.has_requests():
            return {}, False
        scheduler_output = self.scheduler.schedule(self._should_throttle_prefills())
        future = self.model_executor.execute_model(scheduler_output, non_block=True)
        model_output = future.result()
        engine_core_outputs = self.scheduler.update_from_output(scheduler_output, model_output)
        return engine_core_outputs, scheduler_output.total_num_scheduled_tokens > 0

    def step_with_batch_queue(self) -> tuple:
        """Schedule and execute batches with the batch queue: fill the queue first; when it
        is full or nothing new can be scheduled, wait for the oldest batch."""
        batch_queue = self.batch_queue
        assert batch_queue is not None
        model_executed = False
        if self.scheduler.has_requests():
            scheduler_output = self.scheduler.schedule(self._should_throttle_prefills())
            if scheduler_output.total_num_scheduled_tokens > 0:
                future = self.model_executor.execute_model(scheduler_output, non_block=True)
                batch_queue.appendleft((future, scheduler_output))
                model_executed = True
                if len(batch_queue) < self.batch_queue_size:
                    return None, model_executed
        if not batch_queue:
            return None, False
        future, scheduler_output = batch_queue.pop()
        model_output = future.result()
        engine_core_outputs = self.scheduler.update_from_output(scheduler_output, model_output)
        return engine_core_outputs, model_executed
