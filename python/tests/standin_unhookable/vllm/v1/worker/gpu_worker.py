"""A stand-in for vLLM's `vllm/v1/worker/gpu_worker.py` whose worker runs a model the layer
hooks cannot reach (its runner has neither `model` nor `get_model`): what the real vLLM cannot
show, for the test of the one warning that says so."""

from dataclasses import dataclass, field
from typing import Dict


@dataclass
class SchedulerOutput:
    num_scheduled_tokens: Dict[str, int] = field(default_factory=dict)
    total_num_scheduled_tokens: int = 0


class OpaqueRunner:
    pass


class Worker:
    def __init__(self, rank: int = 0) -> None:
        self.rank = rank
        self.model_runner = OpaqueRunner()

    def load_model(self) -> None:
        pass

    def execute_model(self, scheduler_output: SchedulerOutput):
        return {"sampled": len(scheduler_output.num_scheduled_tokens)}

    def sample_tokens(self, grammar_output=None):
        return None
