# Seed 004 "3. GPU硬件监控", as written; only `vllm.profiler` became `vllm_profiler`.
# The test runs it against the fake NVML library (one scripted device).
from vllm_profiler.gpu_monitor import GPUHardwareMonitor

# 创建GPU硬件监控器
gpu_monitor = GPUHardwareMonitor(device_id=0, sample_interval=0.1)
gpu_monitor.start()

# 运行你的推理代码
# ...

# 获取监控结果
current_metrics = gpu_monitor.get_current_metrics()
print(f"GPU Utilization: {current_metrics.gpu_utilization:.1f}%")
print(f"Memory Utilization: {current_metrics.memory_utilization:.1f}%")
print(f"Temperature: {current_metrics.temperature}°C")

# 获取历史数据
history = gpu_monitor.get_metrics_history(duration_sec=60.0)  # 最近1分钟
gpu_monitor.stop()
# --- test postscript ---
print(f"history: {len(history)} samples of device {sorted({m.device_id for m in history})}")
