"""The shapes of the dicts the API returns: `TypedDict`s of the agent's JSON.

The schema has one source, the serde structs of `crates/format`: each class below mirrors the
struct it names, key for key, and python/tests/test_schema.py holds them equal (to the structs'
fields and to what the real agent writes). A Rust `Option<T>` field is written as `null` when
unset, so its key is always there and its value `Optional`; a field with
`skip_serializing_if` is left out when unset, so its key is optional (a `total=False` class).
Readers must ignore keys they do not know: the agent may add some (see `crates/format`).

This module imports nothing of the package, and only `typing` (the classes are for type
checkers; at run time they are plain dicts).
"""

from typing import Dict, List, Literal, Optional, TypedDict

__all__ = [
    "CompletedStep",
    "Counters",
    "ExportStamp",
    "GpuDevice",
    "GpuHistory",
    "GpuList",
    "GpuListEntry",
    "GpuMonitorMetrics",
    "GpuSample",
    "HostSample",
    "KernelLaunch",
    "KernelPerformance",
    "LayerPerformance",
    "MemorySource",
    "PerformanceSummary",
    "Role",
    "TorchOpPerformance",
    "TorchOpTop",
    "TorchOpWindow",
]

# format::Role, snake_case.
Role = Literal["api_server", "engine_core", "worker", "process"]
# format::MemorySource, snake_case.
MemorySource = Literal["gpu_process", "gpu", "host_rss", "none"]


class ExportStamp(TypedDict):
    """format::ExportStamp (summary.rs): which export of the session wrote a report."""

    sequence: int
    at: float


class _LayerPerformance(TypedDict):
    avg_duration_ms: float
    call_count: int
    total_duration_ms: float
    avg_gpu_duration_ms: Optional[float]
    total_gpu_duration_ms: Optional[float]


class LayerPerformance(_LayerPerformance, total=False):
    """format::LayerPerformance (summary.rs): one span name over every call."""

    avg_memory_delta_mb: float


class KernelLaunch(TypedDict):
    """format::KernelLaunch (summary.rs): a kernel's launch configuration."""

    grid: List[int]
    block: List[int]
    registers_per_thread: int
    static_shared_memory_bytes: int
    dynamic_shared_memory_bytes: int


class KernelPerformance(TypedDict):
    """format::KernelPerformance (summary.rs): one CUDA kernel name's device time."""

    call_count: int
    total_duration_ms: float
    avg_duration_ms: float
    p99_duration_ms: float
    max_duration_ms: float
    graph_launches: int
    launch: Optional[KernelLaunch]


class TorchOpPerformance(TypedDict):
    """format::TorchOpPerformance (torch_ops.rs): one torch op name over every window."""

    call_count: int
    host_time_ms: float
    self_host_time_ms: float
    avg_host_time_ms: float
    device_time_ms: Optional[float]
    self_device_time_ms: Optional[float]
    self_cpu_memory_bytes: Optional[int]
    self_device_memory_bytes: Optional[int]


class TorchOpTop(TypedDict):
    """format::TorchOpTop (torch_ops.rs): one op of a window's `top_ops`."""

    name: str
    call_count: int
    self_host_time_ms: float
    host_time_ms: float
    self_device_time_ms: Optional[float]


class TorchOpWindow(TypedDict):
    """format::TorchOpWindow (torch_ops.rs): one torch profiler window."""

    window: int
    start_time: float
    duration_ms: float
    steps: int
    op_names: int
    trace_events: int
    dropped_trace_events: int
    top_ops: List[TorchOpTop]


class Counters(TypedDict):
    """format::Counters (summary.rs): what was lost or repaired."""

    kept_steps: int
    dropped_steps: int
    dropped_samples: int
    lost_events: int
    auto_closed_spans: int
    unfinished_steps: int
    unfinished_spans: int
    total_spans: int
    unmatched_gpu_durations: int
    kernel_records: int
    unattributed_kernels: int
    dropped_kernel_records: int
    lost_kernel_records: int
    torch_op_windows: int
    dropped_torch_op_events: int
    lost_torch_op_windows: int


class _PerformanceSummary(TypedDict):
    schema_version: int
    pid: int
    role: Role
    rank: Optional[int]
    run_id: Optional[str]
    parent_pid: Optional[int]
    started_unix: Optional[float]
    generated_at: float
    last_n_steps: Optional[int]
    total_steps: int
    empty_steps: int
    avg_duration_ms: Optional[float]
    min_duration_ms: Optional[float]
    max_duration_ms: Optional[float]
    p50_duration_ms: Optional[float]
    p90_duration_ms: Optional[float]
    p99_duration_ms: Optional[float]
    total_tokens: int
    total_batch_size: int
    tokens_per_second: Optional[float]
    window_seconds: Optional[float]
    avg_memory_mb: Optional[float]
    max_memory_mb: Optional[float]
    memory_source: MemorySource
    detector: Optional[str]
    layer_performance: Dict[str, LayerPerformance]
    kernel_performance: Optional[Dict[str, KernelPerformance]]
    torch_op_performance: Optional[Dict[str, TorchOpPerformance]]
    torch_op_windows: Optional[List[TorchOpWindow]]
    counters: Counters


class PerformanceSummary(_PerformanceSummary, total=False):
    """format::PerformanceSummary (summary.rs): `get_performance_summary()`, and
    `performance_summary_<pid>.json`, which alone has `export`."""

    export: ExportStamp


class GpuSample(TypedDict):
    """format::GpuSample (gpu.rs): one device at one instant; a figure it cannot give is None."""

    timestamp: float
    device_id: int
    gpu_utilization: Optional[float]
    memory_utilization: Optional[float]
    temperature: Optional[float]
    power_draw: Optional[float]
    memory_used_mb: Optional[float]
    memory_total_mb: Optional[float]
    memory_free_mb: Optional[float]
    memory_controller_utilization: Optional[float]
    power_limit: Optional[float]
    sm_clock_mhz: Optional[float]
    memory_clock_mhz: Optional[float]
    process_memory_used_mb: Optional[float]
    sm_active_percent: Optional[float]
    sm_occupancy_percent: Optional[float]
    tensor_active_percent: Optional[float]
    dram_bandwidth_percent: Optional[float]


class GpuDevice(TypedDict):
    """format::GpuDevice (gpu.rs): a device as the detector found it."""

    index: int
    name: Optional[str]
    uuid: Optional[str]
    gpu_type: str
    memory_total_mb: Optional[float]


class HostSample(TypedDict):
    """format::HostSample (gpu.rs): the host at one instant."""

    timestamp: float
    process_cpu_percent: Optional[float]
    process_rss_mb: Optional[float]
    host_memory_used_mb: Optional[float]
    host_memory_total_mb: Optional[float]


class _GpuHistory(TypedDict):
    schema_version: int
    pid: int
    role: Role
    rank: Optional[int]
    detector: str
    sample_interval_s: float
    devices: List[GpuDevice]
    gpu_history: List[GpuSample]
    host_history: List[HostSample]
    dropped_samples: int


class GpuHistory(_GpuHistory, total=False):
    """format::GpuHistory (gpu.rs): the kept samples, and `gpu_history_<pid>.json`, which
    alone has `export`."""

    export: ExportStamp


class GpuListEntry(TypedDict):
    """format::GpuListEntry (gpu.rs): one GPU of the list, memory in whole MiB; what
    `UnifiedGPUDetector.get_gpu_info` returns (its torch fallbacks give the same keys)."""

    index: int
    name: str
    gpu_type: str
    total_memory_mb: Optional[int]
    used_memory_mb: Optional[int]
    free_memory_mb: Optional[int]
    utilization_percent: Optional[float]


class GpuList(TypedDict):
    """format::GpuList (gpu.rs): the GPU list (`UnifiedGPUDetector.as_api_response`)."""

    gpus: List[GpuListEntry]
    total: int
    detector: str


# Made by the package, not the agent.


class CompletedStep(TypedDict):
    """The record `VLLMPerformanceMonitor.on_step_completed` gets: keys of format::StepRecord
    (steps.rs, a detailed step), as the package measures them around the step."""

    step_id: int
    batch_size: int
    num_tokens: int
    start_time: float
    duration_ms: float


class GpuMonitorMetrics(TypedDict):
    """`GPUMonitor.get_metrics()`: one device of the GPU list (format::GpuListEntry) under
    the NVML-style monitor's names."""

    gpu_util_percent: Optional[float]
    memory_util_percent: Optional[float]
    memory_used_mb: Optional[float]
    memory_total_mb: Optional[float]
    memory_free_mb: Optional[float]
