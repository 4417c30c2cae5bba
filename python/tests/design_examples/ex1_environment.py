# Seed 004 "1. 环境变量方式": `python your_vllm_script.py` with VLLM_ENABLE_PROFILING=1,
# VLLM_ENABLE_GPU_MONITORING=1 and VLLM_PROFILING_OUTPUT_DIR=./profiling_results set by the
# test. The script knows nothing of the profiler.
from vllm import LLM, SamplingParams

llm = LLM("facebook/opt-125m")
sampling_params = SamplingParams(temperature=0.7, max_tokens=100)
outputs = llm.generate(["Hello world"], sampling_params)
