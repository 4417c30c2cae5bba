//! The torch-op level: what the Python package hands the agent at the end of each torch
//! profiler window (`vllm_profiler_torch_op_window`), and what the summary says of the windows.
//!
//! The package runs `torch.profiler` for K steps of every N (`VLLM_PROFILING_TORCH_OPS`) and
//! sends each window as one [`TorchOpWindowInput`] document. Every figure in it is the torch
//! profiler's own: host times from its CPU events, device times from the kernels it linked to
//! each op, memory from its allocator events (`profile_memory=True`).

use serde::{Deserialize, Serialize};

/// One torch profiler window, as the Python package sends it. Times are nanoseconds on one
/// clock of the sender's choice (the package uses the wall clock, which the torch profiler's
/// timestamps follow); `now_ns` is that clock when the document was made, so that the agent
/// places every time relative to its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchOpWindowInput {
    pub now_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The step handles of the window's steps, in order, as `vllm_profiler_step_begin` gave
    /// them on the calling thread.
    pub steps: Vec<u64>,
    /// Per op name over the window.
    #[serde(default)]
    pub ops: Vec<TorchOpInput>,
    /// Op executions for the trace.
    #[serde(default)]
    pub events: Vec<TorchOpEventInput>,
    /// Device kernels the torch profiler recorded (CUDA only).
    #[serde(default)]
    pub kernels: Vec<TorchKernelInput>,
    /// Events the sender left out (past its own limit).
    #[serde(default)]
    pub dropped_events: u64,
}

/// One op name's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchOpInput {
    pub name: String,
    pub calls: u64,
    /// Host time of its calls, children included.
    pub host_ns: u64,
    /// Host time of its calls, children excluded.
    pub self_host_ns: u64,
    /// Device time of the kernels its calls launched, children's included; `null` without a
    /// device.
    #[serde(default)]
    pub device_ns: Option<u64>,
    #[serde(default)]
    pub self_device_ns: Option<u64>,
    /// Host memory its calls allocated, less what they freed (children excluded); `null`
    /// when memory was not profiled.
    #[serde(default)]
    pub self_cpu_memory_bytes: Option<i64>,
    #[serde(default)]
    pub self_device_memory_bytes: Option<i64>,
}

/// One op execution, for the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchOpEventInput {
    pub name: String,
    /// 0: the calling thread; otherwise the torch profiler's id of another thread.
    #[serde(default)]
    pub thread: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
}

/// One kernel from the torch profiler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchKernelInput {
    pub name: String,
    #[serde(default)]
    pub device: u32,
    #[serde(default)]
    pub stream: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Index in `steps` of the step that launched it; `null` when unknown.
    #[serde(default)]
    pub step: Option<u32>,
}

/// `torch_op_performance` entry: one op name over every window of the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchOpPerformance {
    pub call_count: u64,
    /// Host time, children included.
    pub host_time_ms: f64,
    pub self_host_time_ms: f64,
    pub avg_host_time_ms: f64,
    /// Device time of the kernels it launched, children's included; `null` without a device.
    pub device_time_ms: Option<f64>,
    pub self_device_time_ms: Option<f64>,
    /// Host memory allocated less freed by its own calls; `null` when not profiled.
    pub self_cpu_memory_bytes: Option<i64>,
    pub self_device_memory_bytes: Option<i64>,
}

impl TorchOpPerformance {
    /// The entry that counts the ops of names past the limit of 1024.
    pub const OTHER_OPS: &'static str = "(other ops)";
}

/// `torch_op_windows` entry: one torch profiler window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchOpWindow {
    /// Windows of the process counted from 0.
    pub window: u64,
    /// Unix seconds at its start.
    pub start_time: f64,
    pub duration_ms: f64,
    /// Steps it profiled.
    pub steps: u32,
    /// Distinct op names in it.
    pub op_names: u32,
    /// Op executions it put in the trace, and those left out.
    pub trace_events: u64,
    pub dropped_trace_events: u64,
    /// Its ops with the most self time (device time where there is a device, host time
    /// otherwise), at most 10.
    pub top_ops: Vec<TorchOpTop>,
}

/// One op of a window's `top_ops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchOpTop {
    pub name: String,
    pub call_count: u64,
    pub self_host_time_ms: f64,
    pub host_time_ms: f64,
    pub self_device_time_ms: Option<f64>,
}
