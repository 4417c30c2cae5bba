# Seed 004 "1. 自定义监控指标", as written; only `vllm.profiler` became `vllm_profiler`.
from vllm_profiler.gpu_monitor import GPUMetrics

class CustomGPUMetrics(GPUMetrics):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.custom_metric = self._calculate_custom_metric()
    
    def _calculate_custom_metric(self):
        # 自定义指标计算逻辑
        return 0.0
# --- test postscript: the monitor hands out the subclass (run against the fake NVML) ---
from vllm_profiler.gpu_monitor import GPUHardwareMonitor
gpu_monitor = GPUHardwareMonitor(device_id=0, metrics_class=CustomGPUMetrics)
gpu_monitor.start()
metrics = gpu_monitor.get_current_metrics()
gpu_monitor.stop()
print(f"{type(metrics).__name__} custom_metric={metrics.custom_metric} gpu_utilization={metrics.gpu_utilization}")
