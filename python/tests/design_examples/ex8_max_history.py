# Seed 004 "故障排除 2. 内存不足", as written; only `vllm.profiler` became `vllm_profiler`.
# --- test preamble: the seed's snippet uses `model_runner` without defining it ---
from vllm import LLM, SamplingParams
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
llm = LLM("facebook/opt-125m")
model_runner = llm.llm_engine.workers[0].model_runner
# --- seed 004 ---
# 减少监控历史缓存大小
monitor = VLLMPerformanceMonitor(
    model_runner=model_runner,
    max_history_size=1000  # 减少到1000个样本
)
# --- test postscript: the bound holds, totals still cover every step ---
small = VLLMPerformanceMonitor(model_runner=model_runner, max_history_size=3)
small.start_monitoring()
for i in range(5):
    with small.profile_inference_step(batch_size=1, num_tokens=4):
        llm.generate(["Hello world"], SamplingParams(max_tokens=2))
small.stop_monitoring()
