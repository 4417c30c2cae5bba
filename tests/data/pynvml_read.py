"""Reads every device through the official NVML bindings (nvidia-ml-py) and prints JSON.

tests/gpu_e2e.rs runs it against the fake NVML, as an independent check that the fake speaks
NVML's C ABI: pynvml declares its own structs and calls nvmlInitWithFlags.
"""

import json
import sys

try:
    import pynvml
except ImportError:
    sys.exit("pynvml_read.py: the nvidia-ml-py package is missing (pip install nvidia-ml-py)")


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def main():
    pynvml.nvmlInit()
    count = pynvml.nvmlDeviceGetCount()
    devices = []
    for i in range(count):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        memory = pynvml.nvmlDeviceGetMemoryInfo(h)
        memory_v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
        utilization = pynvml.nvmlDeviceGetUtilizationRates(h)
        devices.append(
            {
                "name": text(pynvml.nvmlDeviceGetName(h)),
                "uuid": text(pynvml.nvmlDeviceGetUUID(h)),
                "memory": [memory.total, memory.used, memory.free],
                "memory_v2": [memory_v2.total, memory_v2.used, memory_v2.free],
                "utilization": [utilization.gpu, utilization.memory],
                "temperature": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
                "power_mw": pynvml.nvmlDeviceGetPowerUsage(h),
                "power_limit_mw": pynvml.nvmlDeviceGetEnforcedPowerLimit(h),
                "clocks": [
                    pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                    pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                ],
                "processes": [
                    [p.pid, p.usedGpuMemory]
                    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                ],
            }
        )
    result = {
        "driver_version": text(pynvml.nvmlSystemGetDriverVersion()),
        "count": count,
        "devices": devices,
    }
    pynvml.nvmlShutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
