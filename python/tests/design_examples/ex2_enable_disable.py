# Seed 004 "2. 代码集成方式", as written; only `vllm.profiler` became `vllm_profiler`.
from vllm import LLM, SamplingParams
from vllm_profiler.integration import enable_vllm_profiling, disable_vllm_profiling

# 启用监控
enable_vllm_profiling(
    enable_gpu_monitoring=True,      # 启用GPU硬件监控
    enable_layer_profiling=False,    # 启用详细层级监控（会影响性能）
    output_dir="./profiling_results" # 结果输出目录
)

# 正常使用vLLM
llm = LLM("facebook/opt-125m")
sampling_params = SamplingParams(temperature=0.7, max_tokens=100)
outputs = llm.generate(["Hello world"], sampling_params)

# 禁用监控并导出结果
disable_vllm_profiling()
