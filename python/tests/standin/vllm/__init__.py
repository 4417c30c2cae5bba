"""A stand-in for the `vllm` package, for mechanism tests: the module paths, class and method
names and signatures that vllm-profiler's hooks touch are those of vLLM's current V1 source
(`vllm/v1/engine/core.py`, `vllm/v1/worker/gpu_model_runner.py`); `LLM` drives a small real
torch model on the CPU. It is not vLLM: no tokenizer, no KV cache, greedy "sampling"."""

from vllm.entrypoints.llm import LLM
from vllm.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams"]
