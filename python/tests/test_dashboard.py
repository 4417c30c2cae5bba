"""The shipped Grafana dashboard and scrape config (examples/) against a real Prometheus server
that scraped a profiled multi-process host: stand-ins of an API server, an engine core and two
workers, recording steps all along, on the fake NVML with every figure the series export. Every
panel's query returns data. test_real_vllm.py runs the same queries over the real vLLM server."""

import json

from prometheus_server import DASHBOARD, Prometheus, check_dashboard
from conftest import free_port
from test_prometheus_server import start_members, stop_members

RECORDING_MEMBER = """
import sys, threading, time
from vllm_profiler import _native
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor
role, rank, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
_native.check(_native.library().vllm_profiler_set_role(role.encode(), rank))
monitor = VLLMPerformanceMonitor()
done = threading.Event()
def record():
    while steps and not done.is_set():
        with monitor.profile_inference_step(batch_size=2, num_tokens=steps):
            time.sleep(0.02)
recorder = threading.Thread(target=record)
recorder.start()
print("ready", flush=True)
sys.stdin.readline()
done.set()
recorder.join()
"""

FULL_GPU = {
    "devices": [{
        "name": "Dashboard GPU",
        "uuid": "GPU-dashb0a2-0000-0000-0000-000000000000",
        "memory_total_mb": 8192,
        "frames": [{
            "gpu_utilization": 61, "memory_controller_utilization": 12, "memory_used_mb": 4096,
            "temperature": 57, "power_draw_mw": 150000, "power_limit_mw": 300000,
            "sm_clock_mhz": 1410, "memory_clock_mhz": 1215,
            "processes": [{"pid": "self", "used_memory_mb": 1024}],
        }],
    }]
}


def test_the_dashboard_loads_and_every_panel_query_returns_data(
    agent_library, fake_nvml, tmp_path
):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vllm-profiler" and len(dashboard["panels"]) >= 10
    port = free_port()
    members = start_members(agent_library, fake_nvml, tmp_path, f"127.0.0.1:{port}",
                            code=RECORDING_MEMBER, script=FULL_GPU)
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
    try:
        roles = prometheus.wait_for(
            "count by (role) (vllm_profiler_steps_total)",
            lambda r: {s["metric"]["role"]: s["value"][1] for s in r} == {
                "api_server": "1", "engine_core": "1", "worker": "2"})
        assert len(roles) == 3
        results = check_dashboard(prometheus)
        # The shipped config gives the GPU series dcgm-exporter's labels.
        (gpu,) = results["GPU utilization"]
        assert gpu["metric"]["modelName"] == "Dashboard GPU", gpu
        assert "model_name" not in gpu["metric"]
        assert gpu["metric"]["UUID"] == "GPU-dashb0a2-0000-0000-0000-000000000000"
        assert float(gpu["value"][1]) == 61
        per_process = results["GPU memory per process"]
        assert sorted(s["metric"]["role"] for s in per_process) == [
            "api_server", "engine_core", "worker", "worker"]
        # The fake lists one process on the device, "self": the one that samples it for the
        # host (the others read its shared samples, and are not in its list).
        assert sorted(float(s["value"][1]) for s in per_process) == [0, 0, 0, 1024 ** 3]
    finally:
        prometheus.stop()
        stop_members(members)
