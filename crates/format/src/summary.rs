//! `performance_summary_<pid>.json` and the vocabulary every report shares: the process's
//! role, the source of memory figures, the export stamp.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a process is in a vLLM server (SPEC: every report carries it). The Python hook tells
/// the agent; a process it says nothing about is `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The OpenAI-compatible front end (`vllm.entrypoints.openai.api_server`).
    ApiServer,
    /// The process running vLLM's `EngineCore` (its scheduler and engine steps).
    EngineCore,
    /// A model worker (`VllmWorker-N`, `Worker_TP`); its reports carry its `rank`.
    Worker,
    #[default]
    Process,
}

impl Role {
    /// The role's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ApiServer => "api_server",
            Role::EngineCore => "engine_core",
            Role::Worker => "worker",
            Role::Process => "process",
        }
    }

    /// The role named `name` (`api_server`, `engine_core`, `worker`, `process`).
    pub fn parse(name: &str) -> Option<Role> {
        [
            Role::ApiServer,
            Role::EngineCore,
            Role::Worker,
            Role::Process,
        ]
        .into_iter()
        .find(|role| role.as_str() == name)
    }
}

/// Where the per-step `memory_used_mb` figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// GPU memory used by this process on its device (NVML's running compute processes).
    GpuProcess,
    /// GPU memory in use on the device, all processes: this process's own figure was not
    /// readable.
    Gpu,
    /// No GPU was sampled: the resident set size of this process.
    HostRss,
    /// Nothing was sampled (monitoring off): memory figures are null.
    #[default]
    None,
}

/// Which export of a session wrote a report: `sequence` counts the session's exports from 1
/// (a set written by `vllm-profiler recover` counts from 1 again), `at` is the export's Unix
/// time in seconds. Files of one set have equal stamps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExportStamp {
    pub sequence: u64,
    pub at: f64,
}

impl ExportStamp {
    /// The keys of the stamp in a trace file's `otherData`.
    pub const TRACE_SEQUENCE: &'static str = "export_sequence";
    pub const TRACE_AT: &'static str = "exported_at";
}

/// Whether `id` is a run id (`run_id`, `VLLM_PROFILING_RUN_ID`): 1 to 64 letters, digits, `.`,
/// `_`, `-` and `:`.
pub fn is_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// `performance_summary_<pid>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceSummary {
    pub schema_version: u32,
    pub pid: u32,
    /// What this process is in a vLLM server.
    #[serde(default)]
    pub role: Role,
    /// A worker's rank (tensor and pipeline parallel); `null` for other roles.
    #[serde(default)]
    pub rank: Option<u32>,
    /// The server run this process belongs to (`VLLM_PROFILING_RUN_ID`, inherited by the
    /// processes it starts); `null` from a writer that did not know it.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The pid of the process that started this one.
    #[serde(default)]
    pub parent_pid: Option<u32>,
    /// Unix seconds when profiling started in this process.
    #[serde(default)]
    pub started_unix: Option<f64>,
    /// Unix seconds when this summary was made.
    pub generated_at: f64,
    /// The export that wrote this file: the reports of one export (`performance_summary`,
    /// `detailed_steps`, `gpu_history`, and `trace`'s `otherData`) carry the same stamp, so a
    /// reader can tell a whole set from one that mixes two exports (after a kill or a full
    /// disk). Absent from a summary asked for through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStamp>,

    /// `None` for the whole run; `Some(n)` when summarising only the last `n` kept steps.
    #[serde(default)]
    pub last_n_steps: Option<u64>,
    /// seed 004: every step recorded that did work (not only the kept history). A step that
    /// ended with batch size 0 and 0 tokens scheduled nothing: it is counted in `empty_steps`
    /// and in no duration, percentile or rate.
    pub total_steps: u64,
    /// Steps that scheduled nothing (an engine step with no request ready).
    #[serde(default)]
    pub empty_steps: u64,
    /// seed 004. `null` when no step was recorded.
    pub avg_duration_ms: Option<f64>,
    /// seed 004.
    pub min_duration_ms: Option<f64>,
    /// seed 004.
    pub max_duration_ms: Option<f64>,
    pub p50_duration_ms: Option<f64>,
    pub p90_duration_ms: Option<f64>,
    pub p99_duration_ms: Option<f64>,
    pub total_tokens: u64,
    pub total_batch_size: u64,
    /// Tokens over the window from the first step's start to the last step's end.
    pub tokens_per_second: Option<f64>,
    /// Length of that window in seconds.
    pub window_seconds: Option<f64>,
    /// seed 004: mean of the steps' `memory_used_mb`.
    pub avg_memory_mb: Option<f64>,
    /// seed 004.
    pub max_memory_mb: Option<f64>,
    pub memory_source: MemorySource,
    /// The detector that answered (seed 001): `AMDSMIDetector`, `NVMLDetector`, `CPUDetector`;
    /// `null` before the sampler's first sample or with GPU monitoring off.
    #[serde(default)]
    pub detector: Option<String>,
    /// seed 004: per span name, over every span ever recorded.
    pub layer_performance: BTreeMap<String, LayerPerformance>,
    /// Per CUDA kernel name (demangled), from CUPTI with `VLLM_PROFILING_KERNELS=1`: over every
    /// kernel record of the process, also in a summary of the last n steps. `null` when no
    /// kernel record came (kernels off, no CUDA, or CUPTI refused). Kernels of a CUDA graph
    /// replay are here too, one record per kernel. Past 512 names, the rest are counted under
    /// [`KernelPerformance::OTHER_KERNELS`].
    #[serde(default)]
    pub kernel_performance: Option<BTreeMap<String, KernelPerformance>>,
    /// Per torch op name, from the torch profiler's windows (`VLLM_PROFILING_TORCH_OPS=1`):
    /// over every window of the process, also in a summary of the last n steps. `null` when no
    /// window ended. Past 1024 names, the rest are counted under
    /// [`crate::TorchOpPerformance::OTHER_OPS`].
    #[serde(default)]
    pub torch_op_performance: Option<BTreeMap<String, crate::TorchOpPerformance>>,
    /// The newest 256 torch profiler windows, oldest first, each with its top ops; `null` when
    /// no window ended.
    #[serde(default)]
    pub torch_op_windows: Option<Vec<crate::TorchOpWindow>>,
    pub counters: Counters,
}

/// One kernel name's figures: device time from CUPTI's start and end of each execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelPerformance {
    pub call_count: u64,
    pub total_duration_ms: f64,
    pub avg_duration_ms: f64,
    /// Within 1 % (two significant figures), and never above `max_duration_ms`.
    pub p99_duration_ms: f64,
    pub max_duration_ms: f64,
    /// How many of `call_count` ran inside a CUDA graph replay.
    pub graph_launches: u64,
    /// Launch configuration of its slowest execution; `null` when none was recorded.
    pub launch: Option<KernelLaunch>,
}

impl KernelPerformance {
    /// The entry that counts the kernels of names past the limit of 512.
    pub const OTHER_KERNELS: &'static str = "(other kernels)";
}

/// A kernel's launch configuration and resource use, as CUPTI reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelLaunch {
    pub grid: [i32; 3],
    pub block: [i32; 3],
    pub registers_per_thread: u16,
    pub static_shared_memory_bytes: i32,
    pub dynamic_shared_memory_bytes: i32,
}

/// seed 004 `layer_performance` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPerformance {
    /// Host time per call. On a GPU this is the time taken to launch the layer's kernels; the
    /// device's is `avg_gpu_duration_ms`.
    pub avg_duration_ms: f64,
    pub call_count: u64,
    pub total_duration_ms: f64,
    /// Device time per call, over the calls that had one (CUDA events around each call);
    /// `null` on CPU.
    #[serde(default)]
    pub avg_gpu_duration_ms: Option<f64>,
    #[serde(default)]
    pub total_gpu_duration_ms: Option<f64>,
    /// Mean memory delta (MiB) over the calls that carried one
    /// (`vllm_profiler_span_end_annotated`); omitted when none did. Figures carry `f32`
    /// precision (about 7 significant digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_memory_delta_mb: Option<f64>,
}

/// What was lost or repaired, so that no count is silently wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Detailed steps kept in the history now.
    pub kept_steps: u64,
    /// Oldest detailed steps evicted from the bounded history (still in the totals).
    pub dropped_steps: u64,
    /// Samples evicted from the bounded sample histories.
    pub dropped_samples: u64,
    /// Step or span ends that could not be handed to the collector because a thread's buffer was
    /// full; these are missing from every total.
    pub lost_events: u64,
    /// Spans still open when an enclosing span or their step ended; closed at that moment.
    pub auto_closed_spans: u64,
    /// Steps never ended (open when their thread exited, or abandoned at the limit of 1024
    /// open steps per thread); they are in no total.
    #[serde(default)]
    pub unfinished_steps: u64,
    /// Spans never ended (open when their thread exited, or abandoned at the nesting limit of
    /// 4096 per thread); they are in no total.
    #[serde(default)]
    pub unfinished_spans: u64,
    /// Spans recorded (closed), inside or outside steps (within the last n steps when the
    /// summary is of the last n).
    pub total_spans: u64,
    /// Device durations whose step could no longer be found (set long after its end, or of a
    /// step that scheduled nothing): a span's is in its layer's summary totals but in no step,
    /// a step's in no figure.
    #[serde(default)]
    pub unmatched_gpu_durations: u64,
    /// Kernel records received from CUPTI (`VLLM_PROFILING_KERNELS=1`), in
    /// `kernel_performance`.
    #[serde(default)]
    pub kernel_records: u64,
    /// Kernel records whose step was not found: launched outside every step, or arrived after
    /// their step left the late-arrival window. In `kernel_performance`, in no step.
    #[serde(default)]
    pub unattributed_kernels: u64,
    /// Activity records CUPTI dropped because it had no buffer free: in no figure. CUPTI
    /// counts every kind together, so this includes the API and correlation records that
    /// come with each launch (about three records a launch).
    #[serde(default)]
    pub dropped_kernel_records: u64,
    /// Kernel records parsed but not handed to the collector because its inbox was full, and
    /// kernels of a torch profiler window past its limit of 65536 or from before the session
    /// began: in no figure.
    #[serde(default)]
    pub lost_kernel_records: u64,
    /// Torch profiler windows received (`torch_op_windows` keeps the newest 256).
    #[serde(default)]
    pub torch_op_windows: u64,
    /// Op executions of those windows left out of the trace (past the sender's limit or the
    /// agent's): in the figures, in no trace.
    #[serde(default)]
    pub dropped_torch_op_events: u64,
    /// Windows lost before the collector took them (more than 8 waiting): in no figure.
    #[serde(default)]
    pub lost_torch_op_windows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_names_are_snake_case() {
        assert_eq!(
            serde_json::to_string(&MemorySource::HostRss).unwrap(),
            "\"host_rss\""
        );
    }
}
