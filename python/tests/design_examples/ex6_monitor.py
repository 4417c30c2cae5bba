# Seed 004 "2. 直接使用监控器", as written; only `vllm.profiler` became `vllm_profiler`.
# --- test preamble: the seed's snippet uses `sampling_params` without defining it ---
from vllm import SamplingParams
sampling_params = SamplingParams(temperature=0.7, max_tokens=8)
# --- seed 004 ---
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
from vllm import LLM

llm = LLM("facebook/opt-125m")

# 获取ModelRunner（需要根据vLLM版本调整）
model_runner = llm.llm_engine.workers[0].model_runner

# 创建监控器
monitor = VLLMPerformanceMonitor(
    model_runner=model_runner,
    enable_realtime_monitoring=True,
    enable_detailed_profiling=False
)

# 启动监控
monitor.start_monitoring()

# 监控推理过程
for i in range(100):
    with monitor.profile_inference_step(batch_size=1, num_tokens=100):
        outputs = llm.generate(["Hello world"], sampling_params)
    
    # 每10步输出一次摘要
    if i % 10 == 0:
        summary = monitor.get_performance_summary(last_n_steps=10)
        print(f"Last 10 steps avg duration: {summary.get('avg_duration_ms', 0):.1f}ms")

# 停止监控并导出结果
monitor.stop_monitoring()
monitor.export_performance_report("detailed_report.json")
