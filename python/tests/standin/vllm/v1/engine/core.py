"""A stand-in for vLLM's `vllm/v1/engine/core.py`, for a mechanism test of the zero-code
hook: the same module path, class and method names and signatures as vLLM's current V1
engine (`EngineCore.step`, `self.scheduler.schedule()` returning a `SchedulerOutput` with
`num_scheduled_tokens` and `total_num_scheduled_tokens`), and a CPU "model"."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SchedulerOutput:
    num_scheduled_tokens: dict[str, int] = field(default_factory=dict)
    total_num_scheduled_tokens: int = 0


@dataclass
class EngineCoreOutputs:
    outputs: list = field(default_factory=list)


class Scheduler:
    """Continuous batching: up to `max_num_seqs` running requests, one token each per step
    after a prefill of the whole prompt."""

    def __init__(self, max_num_seqs: int = 4) -> None:
        self.max_num_seqs = max_num_seqs
        self.waiting: list[tuple[str, int, int]] = []
        self.running: dict[str, list[int]] = {}

    def add_request(self, request_id: str, prompt_tokens: int, max_tokens: int) -> None:
        self.waiting.append((request_id, prompt_tokens, max_tokens))

    def has_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        scheduled: dict[str, int] = {}
        for request_id, state in self.running.items():
            scheduled[request_id] = 1
        while self.waiting and len(self.running) < self.max_num_seqs:
            request_id, prompt, max_tokens = self.waiting.pop(0)
            self.running[request_id] = [max_tokens]
            scheduled[request_id] = prompt
        return SchedulerOutput(scheduled, sum(scheduled.values()))

    def update_from_output(self, scheduler_output: SchedulerOutput, model_output) -> dict[int, EngineCoreOutputs]:
        finished = []
        for request_id in scheduler_output.num_scheduled_tokens:
            self.running[request_id][0] -= 1
            if self.running[request_id][0] <= 0:
                finished.append(request_id)
        for request_id in finished:
            del self.running[request_id]
        return {0: EngineCoreOutputs(finished)}


class EngineCore:
    def __init__(self, max_num_seqs: int = 4) -> None:
        self.scheduler = Scheduler(max_num_seqs)

    def execute_model(self, scheduler_output: SchedulerOutput) -> int:
        time.sleep(0.0005 * scheduler_output.total_num_scheduled_tokens / 8 + 0.0005)
        return scheduler_output.total_num_scheduled_tokens

    def step(self) -> tuple[dict[int, EngineCoreOutputs], bool]:
        """Schedule, execute, and make output."""
        if not self.scheduler.has_requests():
            return {}, False
        scheduler_output = self.scheduler.schedule()
        model_output = self.execute_model(scheduler_output)
        engine_core_outputs = self.scheduler.update_from_output(scheduler_output, model_output)
        return engine_core_outputs, scheduler_output.total_num_scheduled_tokens > 0
