# Seed 004 "4. 装饰器方式", as written; only `vllm.profiler` became `vllm_profiler`.
from vllm_profiler.integration import profile_vllm_function

@profile_vllm_function(
    enable_gpu_monitoring=True,
    output_dir="./profiling_results"
)
def run_inference():
    from vllm import LLM, SamplingParams
    
    llm = LLM("facebook/opt-125m")
    sampling_params = SamplingParams(temperature=0.7, max_tokens=100)
    outputs = llm.generate(["Hello world"], sampling_params)
    return outputs

# 函数执行时会自动监控
results = run_inference()
# --- test postscript ---
print(f"generated {len(results[0].outputs[0].token_ids)} tokens")
