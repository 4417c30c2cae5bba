"""`LLM`, as in vLLM: build the engine, `generate()` runs engine steps until every request
finished. The engine runs in this process (vLLM's `VLLM_ENABLE_V1_MULTIPROCESSING=0`)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import SamplingParams
from vllm.v1.engine.core import EngineCore
from vllm.v1.worker.gpu_model_runner import GPUModelRunner


class Worker:
    def __init__(self, model_runner: GPUModelRunner) -> None:
        self.model_runner = model_runner


class LLMEngine:
    def __init__(self, engine_core: EngineCore, workers: List[Worker]) -> None:
        self.engine_core = engine_core
        self.workers = workers


def tokenize(prompt: str) -> List[int]:
    return [1] + [sum(word.encode()) % 250 + 2 for word in prompt.split()]


class LLM:
    def __init__(
        self,
        model: str,
        max_num_seqs: int = 8,
        pipeline_parallel_size: int = 1,
        enforce_eager: bool = True,
        **kwargs: object,
    ) -> None:
        runner = GPUModelRunner(model)
        runner.load_model()
        # vLLM keeps a batch queue (one batch in flight per pipeline stage) under PP.
        core = EngineCore(max_num_seqs, model_runner=runner, batch_queue_size=pipeline_parallel_size)
        self.llm_engine = LLMEngine(core, [Worker(runner)])
        self._next_id = 0

    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        sampling_params: Optional[SamplingParams] = None,
        use_tqdm: bool = False,
    ) -> List[RequestOutput]:
        if isinstance(prompts, str):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        core = self.llm_engine.engine_core
        ids = []
        for prompt in prompts:
            request_id = str(self._next_id)
            self._next_id += 1
            core.add_request(request_id, tokenize(prompt), params.max_tokens or 16)
            ids.append(request_id)
        done = {}
        while len(done) < len(ids):
            outputs, _ = core.step_fn()
            for engine_outputs in (outputs or {}).values():
                for finished in engine_outputs.finished:
                    done[finished.request_id] = finished
        return [
            RequestOutput(
                rid,
                prompt,
                tokenize(prompt),
                [CompletionOutput(0, " ".join(f"t{t}" for t in done[rid].output_token_ids), done[rid].output_token_ids)],
            )
            for rid, prompt in zip(ids, prompts)
        ]
