# Seed 004 "3. 上下文管理器方式", as written; only `vllm.profiler` became `vllm_profiler`.
# --- test preamble: the seed's snippet uses `sampling_params` without defining it ---
from vllm import SamplingParams
sampling_params = SamplingParams(temperature=0.7, max_tokens=100)
# --- seed 004 ---
from vllm import LLM, SamplingParams
from vllm_profiler.integration import VLLMProfilingContext

with VLLMProfilingContext(
    enable_gpu_monitoring=True,
    output_dir="./profiling_results"
):
    llm = LLM("facebook/opt-125m")
    outputs = llm.generate(["Hello world"], sampling_params)
    # 监控会在退出时自动停止和导出结果
