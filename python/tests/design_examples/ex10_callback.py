# Seed 004 "2. 集成到现有监控系统", as written; only `vllm.profiler` became `vllm_profiler`.
# --- test preamble: a stand-in `requests` that keeps what is posted, and a monitor ---
import json, sys, types
posted = []
sys.modules["requests"] = types.SimpleNamespace(post=lambda url, json: posted.append((url, json)))
from vllm import LLM, SamplingParams
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
llm = LLM("facebook/opt-125m")
monitor = VLLMPerformanceMonitor(model_runner=llm.llm_engine.workers[0].model_runner)
monitor.start_monitoring()
# --- seed 004 ---
# 将监控结果发送到外部系统
def send_to_monitoring_system(metrics):
    import requests
    requests.post("http://your-monitoring-system/api/metrics", json=metrics)

# 在监控器中添加回调
monitor.on_step_completed = send_to_monitoring_system
# --- test postscript ---
for i in range(5):
    with monitor.profile_inference_step(batch_size=i + 1, num_tokens=3 * (i + 1)):
        llm.generate(["Hello world"] * (i + 1), SamplingParams(max_tokens=2))
monitor.stop_monitoring()
print("POSTED " + json.dumps([(url, m["step_id"], m["batch_size"], m["num_tokens"]) for url, m in posted]))
