"""GPUHardwareMonitor and the NVML-style GPUMonitor, answered by the agent's sampler
(NVML, amd-smi or the CPU fallback) instead of a Python polling loop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import _checks, _native
from .schema import GpuMonitorMetrics, GpuSample


@dataclass
class GPUMetrics:
    """One sample of one device. A figure the device cannot give is None."""

    timestamp: float
    device_id: int
    gpu_utilization: Optional[float] = None
    memory_utilization: Optional[float] = None
    temperature: Optional[float] = None
    power_draw: Optional[float] = None
    memory_used_mb: Optional[float] = None
    memory_total_mb: Optional[float] = None
    memory_free_mb: Optional[float] = None
    memory_controller_utilization: Optional[float] = None
    power_limit: Optional[float] = None
    sm_clock_mhz: Optional[float] = None
    memory_clock_mhz: Optional[float] = None
    process_memory_used_mb: Optional[float] = None
    # GPM (NVIDIA Hopper and newer), over the interval since the previous sample.
    sm_active_percent: Optional[float] = None
    sm_occupancy_percent: Optional[float] = None
    tensor_active_percent: Optional[float] = None
    dram_bandwidth_percent: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sample(cls, sample: GpuSample) -> "GPUMetrics":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        # Any values: a subclass's fields, or keys a newer agent added (kept in `extra`).
        values: Dict[str, Any] = dict(sample)
        metrics = cls(**{k: v for k, v in values.items() if k in known})
        metrics.extra = {k: v for k, v in values.items() if k not in known}
        return metrics


class GPUHardwareMonitor:
    """Samples one device through the agent. `start()` starts the profiler's sampler if
    profiling is off, and returns once the device has a first sample (at most
    `FIRST_SAMPLE_WAIT` seconds), so that `get_current_metrics()` right after it has an
    answer; `stop()` stops what `start()` started. Samples come back as `metrics_class`
    (a GPUMetrics subclass of your own, say)."""

    FIRST_SAMPLE_WAIT = 2.0

    def __init__(
        self,
        device_id: int = 0,
        sample_interval: float = 0.1,
        metrics_class: type = GPUMetrics,
    ) -> None:
        self.device_id = _checks.device("device_id", device_id)
        self.sample_interval = _checks.number("sample_interval", sample_interval)
        if not (isinstance(metrics_class, type) and hasattr(metrics_class, "from_sample")):
            raise TypeError(
                f"metrics_class must be a class with a from_sample method (GPUMetrics or a "
                f"subclass), got {metrics_class!r}"
            )
        self.metrics_class = metrics_class
        self._started_here = False

    def start(self) -> None:
        if not _native.is_enabled():
            _native.enable(
                {"enable_gpu_monitoring": True, "sample_interval": float(self.sample_interval)}
            )
            self._started_here = True
        self._wait_for_first_sample()

    def _wait_for_first_sample(self) -> None:
        listed = _native.gpu_list()
        if not any(g["index"] == self.device_id and g["gpu_type"] != "cpu" for g in listed["gpus"]):
            return  # no such device: there will never be a sample to wait for
        deadline = time.monotonic() + self.FIRST_SAMPLE_WAIT
        while time.monotonic() < deadline:
            if _native.gpu_history(self.device_id)["gpu_history"]:
                return
            time.sleep(0.01)

    def stop(self) -> None:
        if self._started_here:
            self._started_here = False
            _native.disable_if_enabled()

    def get_current_metrics(self) -> Optional[GPUMetrics]:
        """The newest sample of this device, or None before the first one (or with no GPU)."""
        samples = _native.gpu_history(self.device_id, time.time() - 60.0)["gpu_history"]
        if not samples:
            samples = _native.gpu_history(self.device_id)["gpu_history"]
        return self.metrics_class.from_sample(samples[-1]) if samples else None

    def get_metrics_history(self, duration_sec: Optional[float] = None) -> List[GPUMetrics]:
        """The kept samples of this device from the last `duration_sec` seconds (all kept
        samples when None), oldest first."""
        since = 0.0 if duration_sec is None else (
            time.time() - _checks.number("duration_sec", duration_sec))
        history = _native.gpu_history(self.device_id, since)["gpu_history"]
        return [self.metrics_class.from_sample(s) for s in history]


class GPUMonitor:
    """The NVML-style monitor: `get_metrics()` returns `gpu_util_percent`, `memory_util_percent`,
    `memory_used_mb`, `memory_total_mb`, `memory_free_mb` for one device, read now; None when
    the device cannot be read."""

    def __init__(self, device_index: int = 0) -> None:
        self.device_index = _checks.device("device_index", device_index)

    def get_metrics(self) -> Optional[GpuMonitorMetrics]:
        try:
            listed = _native.gpu_list()
        except _native.ProfilerError:
            return None
        for gpu in listed["gpus"]:
            if gpu["index"] != self.device_index or gpu["gpu_type"] == "cpu":
                continue
            total, used = gpu["total_memory_mb"], gpu["used_memory_mb"]
            return {
                "gpu_util_percent": gpu["utilization_percent"],
                "memory_util_percent": (
                    (used / total * 100.0) if total and used is not None else None),
                "memory_used_mb": used,
                "memory_total_mb": total,
                "memory_free_mb": gpu["free_memory_mb"],
            }
        return None

    def cleanup(self) -> None:
        """Nothing to release: the agent owns the vendor library for the process's life."""


_monitors: Dict[int, GPUMonitor] = {}
_monitors_lock = threading.Lock()


def get_gpu_monitor(device_index: int = 0) -> GPUMonitor:
    """The process-wide GPUMonitor of a device (a singleton per device)."""
    device_index = _checks.device("device_index", device_index)
    with _monitors_lock:
        if device_index not in _monitors:
            _monitors[device_index] = GPUMonitor(device_index)
        return _monitors[device_index]
