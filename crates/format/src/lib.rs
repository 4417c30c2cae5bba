//! The schema of every file vllm-profiler exports.
//!
//! This crate is the single definition of the report formats: the agent writes these types and
//! the CLI reads them. It does no I/O. Field names marked "seed 004" are part of the external
//! contract in SPEC.md and never change; everything else may grow, and readers must ignore fields
//! they do not know (serde does by default).
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning or is removed. Adding a field does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the performance summary written by process `pid`.
pub fn summary_file_name(pid: u32) -> String {
    format!("performance_summary_{pid}.json")
}

/// File name of the GPU (and host) sample history written by process `pid`.
pub fn gpu_history_file_name(pid: u32) -> String {
    format!("gpu_history_{pid}.json")
}

/// File name of the detailed per-step records written by process `pid`.
pub fn detailed_steps_file_name(pid: u32) -> String {
    format!("detailed_steps_{pid}.json")
}

/// `vllm-profiler report DIR --json`: what the report's tables show, per process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub dir: String,
    pub processes: Vec<ProcessReport>,
}

/// One process's part of a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub summary: PerformanceSummary,
    /// The layers with the most total time, most first.
    pub top_layers: Vec<NamedLayer>,
    /// Per sampled device, over the kept samples.
    pub gpus: Vec<DeviceStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedLayer {
    pub name: String,
    #[serde(flatten)]
    pub performance: LayerPerformance,
}

/// Min, mean and max of one figure over a device's kept samples; `None` when no sample had it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStats {
    pub device_id: u32,
    pub name: Option<String>,
    pub samples: usize,
    pub gpu_utilization: Option<Spread>,
    pub memory_used_mb: Option<Spread>,
    pub temperature: Option<Spread>,
    pub power_draw: Option<Spread>,
}

/// `vllm-profiler compare A B --json`: the change of each figure from run A to run B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The process compared in each run (the one with the most steps).
    pub pid_a: u32,
    pub pid_b: u32,
    /// Percent past which a worse figure is a regression.
    pub threshold_percent: f64,
    pub metrics: Vec<Change>,
    pub layers: Vec<Change>,
    /// Layers in only one of the runs.
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub regressions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// (b - a) / a in percent; `None` when either is missing or a is 0.
    pub change_percent: Option<f64>,
    /// Whether a larger figure is better (tokens per second) rather than worse (durations).
    pub higher_is_better: bool,
    pub regression: bool,
}

/// File name of the Chrome trace event file (Perfetto, `chrome://tracing`) of process `pid`.
pub fn trace_file_name(pid: u32) -> String {
    format!("trace_{pid}.json")
}

/// `trace_<pid>.json`: the Chrome trace event format's JSON object form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceFile {
    #[serde(rename = "traceEvents")]
    pub trace_events: Vec<TraceEvent>,
    /// `ms` or `ns`: how viewers show times (the events' `ts` and `dur` are microseconds).
    #[serde(rename = "displayTimeUnit")]
    pub display_time_unit: String,
    /// `started_unix`: the Unix time (seconds) of `ts` 0; `dropped_spans`: the oldest spans
    /// left out to keep the trace bounded.
    #[serde(rename = "otherData", default)]
    pub other_data: BTreeMap<String, TraceArg>,
}

/// One trace event. `ph` is `X` (a complete event: a step or a span), `C` (a counter: GPU
/// figures) or `M` (metadata: process and thread names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cat: Option<Cow<'static, str>>,
    pub ph: Cow<'static, str>,
    /// Microseconds since the session started (`otherData.started_unix`); 0 for metadata.
    #[serde(default)]
    pub ts: f64,
    /// Microseconds, `X` events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dur: Option<f64>,
    pub pid: u32,
    #[serde(default)]
    pub tid: u32,
    /// Static keys: a trace has tens of thousands of events, and none needs its own copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<Cow<'static, str>, TraceArg>,
}

/// A value in a trace event's `args`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraceArg {
    /// A count, written as a JSON integer (first: an integer reads back as a count).
    Count(u64),
    Number(f64),
    Text(String),
}

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
    pub counters: Counters,
}

/// seed 004 `layer_performance` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPerformance {
    pub avg_duration_ms: f64,
    pub call_count: u64,
    pub total_duration_ms: f64,
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
}

/// `gpu_history_<pid>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuHistory {
    pub schema_version: u32,
    pub pid: u32,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub rank: Option<u32>,
    /// Name of the detector that answered (seed 001), for example `CPUDetector`.
    pub detector: String,
    pub sample_interval_s: f64,
    /// The sampled devices, as the detector found them.
    #[serde(default)]
    pub devices: Vec<GpuDevice>,
    /// seed 004: one entry per device per sample.
    pub gpu_history: Vec<GpuSample>,
    /// Host-side samples taken at the same ticks: process CPU, RSS and host memory.
    pub host_history: Vec<HostSample>,
    pub dropped_samples: u64,
    /// The export that wrote this file: the reports of one export (`performance_summary`,
    /// `detailed_steps`, `gpu_history`, and `trace`'s `otherData`) carry the same stamp, so a
    /// reader can tell a whole set from one that mixes two exports (after a kill or a full
    /// disk). Absent from a summary asked for through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStamp>,
}

/// One device at one instant. A metric the device cannot give is `null`, never a made-up 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// seed 004: Unix seconds.
    pub timestamp: f64,
    pub device_id: u32,
    /// seed 004: percent of time a kernel was running.
    pub gpu_utilization: Option<f64>,
    /// seed 004: percent of memory capacity in use.
    pub memory_utilization: Option<f64>,
    /// seed 004: degrees Celsius.
    pub temperature: Option<f64>,
    /// seed 004: watts.
    pub power_draw: Option<f64>,
    /// MiB (2^20 bytes), as seed 001 counts them.
    pub memory_used_mb: Option<f64>,
    pub memory_total_mb: Option<f64>,
    #[serde(default)]
    pub memory_free_mb: Option<f64>,
    /// Percent of time the memory controller was busy (NVML's "memory" utilization, AMD's UMC
    /// activity). Not the same as `memory_utilization`.
    #[serde(default)]
    pub memory_controller_utilization: Option<f64>,
    /// Watts.
    #[serde(default)]
    pub power_limit: Option<f64>,
    #[serde(default)]
    pub sm_clock_mhz: Option<f64>,
    #[serde(default)]
    pub memory_clock_mhz: Option<f64>,
    /// GPU memory used by the profiled process on this device, MiB.
    #[serde(default)]
    pub process_memory_used_mb: Option<f64>,
}

/// One process's memory on a device, as the vendor library lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessMemory {
    pub pid: u32,
    /// MiB; `None` where the library hides per-process memory (MIG, vGPU).
    pub used_memory_mb: Option<f64>,
}

/// The latest sample of one device, as the process elected to sample it shares it with the
/// other profiled processes of the host (a small file in the runtime dir, replaced whole on
/// every sample). Internal to the agent; readers check `sampler_pid` and `sequence` to tell a
/// new sample from one already seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedDeviceSample {
    /// The process that sampled the device.
    pub sampler_pid: u32,
    /// Counts that process's samples of the device.
    pub sequence: u64,
    /// Raised by a process that takes sampling over from a holder whose samples went stale
    /// (stopped, hung in the vendor library): a holder that sees a newer generation yields.
    #[serde(default)]
    pub generation: u64,
    /// The sampler's interval, seconds (0: not known yet); a frame written longer ago than
    /// three of them is stale.
    #[serde(default)]
    pub interval_s: f64,
    /// Unix seconds when the frame was written (0: not said); staleness counts from it, not
    /// from the sample's time, so that a slow vendor call does not look like a stopped holder.
    #[serde(default)]
    pub written_at: f64,
    /// `process_memory_used_mb` is the sampler's own; readers take theirs from `processes`.
    pub sample: GpuSample,
    /// Every process's memory on the device; `None` when it could not be read.
    pub processes: Option<Vec<ProcessMemory>>,
}

/// A device as the detector found it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The index the vendor library gives it (NVML's, amd-smi's enumeration order).
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// `nvidia`, `amd` or `cpu`, as in seed 001.
    pub gpu_type: String,
    pub memory_total_mb: Option<f64>,
}

/// Detector name reported when no GPU backend answered (seed 001's last fallback), in
/// `GpuHistory::detector` and `GpuList::detector`.
pub const CPU_DETECTOR: &str = "CPUDetector";

/// Seed 001's GPU list (`GET /api/management/gpus`), printed by `vllm-profiler gpus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuList {
    pub gpus: Vec<GpuListEntry>,
    pub total: usize,
    /// `AMDSMIDetector`, `NVMLDetector` or `CPUDetector`.
    pub detector: String,
}

/// One entry of seed 001's GPU list. Memory in whole MiB, as the seed's `// (1024 * 1024)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuListEntry {
    pub index: u32,
    pub name: String,
    pub gpu_type: String,
    pub total_memory_mb: Option<u64>,
    pub used_memory_mb: Option<u64>,
    pub free_memory_mb: Option<u64>,
    /// `null` where it cannot be read (seed 001's torch fallbacks).
    pub utilization_percent: Option<f64>,
}

/// The host at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub timestamp: f64,
    /// CPU time of this process over the last interval, in percent of one core (can pass 100).
    pub process_cpu_percent: Option<f64>,
    pub process_rss_mb: Option<f64>,
    pub host_memory_used_mb: Option<f64>,
    pub host_memory_total_mb: Option<f64>,
}

/// `detailed_steps_<pid>.json`. `Steps` is how the writer holds the records: readers get a
/// `Vec<StepRecord>`; a writer may pass anything that serialises as a sequence of
/// `StepRecord`, so that a large history streams to disk one record at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetailedSteps<Steps = Vec<StepRecord>> {
    pub schema_version: u32,
    pub pid: u32,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub rank: Option<u32>,
    pub memory_source: MemorySource,
    /// Oldest steps evicted from the bounded history before this file was written.
    pub dropped_steps: u64,
    /// The export that wrote this file: the reports of one export (`performance_summary`,
    /// `detailed_steps`, `gpu_history`, and `trace`'s `otherData`) carry the same stamp, so a
    /// reader can tell a whole set from one that mixes two exports (after a kill or a full
    /// disk). Absent from a summary asked for through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStamp>,
    /// seed 004: the kept history, oldest first.
    pub detailed_steps: Steps,
}

/// seed 004 detailed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// seed 004: 0, 1, 2, ... in the order the steps completed in this process.
    pub step_id: u64,
    pub batch_size: u32,
    pub num_tokens: u32,
    /// Unix seconds when the step began.
    pub start_time: f64,
    pub duration_ms: f64,
    /// seed 004: memory in use at the end of the step; see `memory_source`.
    pub memory_used_mb: Option<f64>,
    /// Memory in use at the start of the step.
    pub memory_start_mb: Option<f64>,
    /// OS thread id that ran the step.
    pub thread_id: u32,
    /// The engine step this step served: in a worker, the engine core's `engine_step` of the
    /// scheduler output it ran; in the engine core, its own count of steps that did work
    /// (0, 1, ...). Join a worker's steps to the engine's on it. `null` when unknown.
    #[serde(default)]
    pub engine_step: Option<u64>,
    /// seed 004: per span name inside this step.
    pub layer_timings: BTreeMap<String, LayerTiming>,
    pub gpu_metrics: StepGpuMetrics,
}

/// seed 004 `layer_timings` entry: one name inside one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTiming {
    /// Total time of every call of this name in the step.
    pub duration_ms: f64,
    pub call_count: u32,
    /// Name of the enclosing span at its first call, `null` at the top of the step.
    pub parent: Option<String>,
    /// Nesting depth under the step at its first call (0 = directly inside the step).
    pub depth: u32,
    /// seed 004: sum of the memory deltas (MiB) of this name's calls in the step that carried
    /// one (`vllm_profiler_span_end_annotated`); omitted when none did. Figures carry `f32`
    /// precision (about 7 significant digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_delta_mb: Option<f64>,
    /// seed 004: input tensor shapes of the first call in the step that carried shapes;
    /// omitted when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shapes: Option<Vec<Vec<u64>>>,
    /// seed 004: output tensor shapes of that same call; omitted when it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shapes: Option<Vec<Vec<u64>>>,
}

/// The tensor shapes a caller attaches to one span (`shapes_json` of
/// `vllm_profiler_span_end_annotated`): `{"input_shapes": [[8, 512, 768]], "output_shapes":
/// [[8, 512, 768]]}`. Either key may be left out; any other key is rejected; every dimension is
/// a non-negative integer. Serialises without the absent keys, so that equal shapes serialise
/// to the same canonical text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with the keys input_shapes and/or output_shapes"
)]
pub struct SpanShapes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shapes: Option<Vec<Vec<u64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shapes: Option<Vec<Vec<u64>>>,
}

impl SpanShapes {
    /// Neither key given (or both `null`): nothing to attach.
    pub fn is_empty(&self) -> bool {
        self.input_shapes.is_none() && self.output_shapes.is_none()
    }
}

/// seed 004 `gpu_metrics` of a step: utilization of the sampled device at its start and end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepGpuMetrics {
    pub start_utilization: Option<f64>,
    pub end_utilization: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_metric_serialises_as_null_not_zero() {
        let sample = GpuSample {
            timestamp: 1.5,
            device_id: 0,
            gpu_utilization: Some(80.0),
            ..GpuSample::default()
        };
        let json: serde_json::Value = serde_json::to_value(&sample).unwrap();
        assert_eq!(json["gpu_utilization"], 80.0);
        assert!(json["temperature"].is_null());
        assert!(json["power_draw"].is_null());
    }

    #[test]
    fn memory_source_names_are_snake_case() {
        assert_eq!(
            serde_json::to_string(&MemorySource::HostRss).unwrap(),
            "\"host_rss\""
        );
    }

    #[test]
    fn span_shapes_reject_unknown_keys_and_bad_dims() {
        let ok: SpanShapes =
            serde_json::from_str(r#"{"output_shapes": [[2, 3]], "input_shapes": [[1], []]}"#)
                .unwrap();
        assert_eq!(ok.input_shapes, Some(vec![vec![1], vec![]]));
        assert_eq!(ok.output_shapes, Some(vec![vec![2, 3]]));
        // Canonical: fixed key order, no spaces, absent keys left out.
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"input_shapes":[[1],[]],"output_shapes":[[2,3]]}"#
        );
        let only_out: SpanShapes = serde_json::from_str(r#"{"output_shapes": []}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&only_out).unwrap(),
            r#"{"output_shapes":[]}"#
        );
        assert!(serde_json::from_str::<SpanShapes>("{}").unwrap().is_empty());
        for bad in [
            r#"{"input_shapes": [[1]], "colour": 1}"#,
            r#"{"input_shapes": [[-1]]}"#,
            r#"{"input_shapes": [[1.5]]}"#,
            r#"{"input_shapes": [1]}"#,
            r#"{"input_shapes": "8x512"}"#,
            r#"[[1]]"#,
        ] {
            assert!(serde_json::from_str::<SpanShapes>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<SpanShapes>(r#"{"colour": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn layer_entries_of_older_files_parse_and_absent_annotations_are_omitted() {
        let timing: LayerTiming = serde_json::from_str(
            r#"{"duration_ms": 1.5, "call_count": 2, "parent": null, "depth": 0}"#,
        )
        .unwrap();
        assert_eq!(timing.memory_delta_mb, None);
        assert_eq!(timing.input_shapes, None);
        assert_eq!(timing.output_shapes, None);
        let json = serde_json::to_value(&timing).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["call_count", "depth", "duration_ms", "parent"]);

        let perf: LayerPerformance = serde_json::from_str(
            r#"{"avg_duration_ms": 1.0, "call_count": 1, "total_duration_ms": 1.0}"#,
        )
        .unwrap();
        assert_eq!(perf.avg_memory_delta_mb, None);
        assert!(serde_json::to_value(&perf)
            .unwrap()
            .get("avg_memory_delta_mb")
            .is_none());
    }

    #[test]
    fn file_names_carry_the_pid() {
        assert_eq!(summary_file_name(42), "performance_summary_42.json");
        assert_eq!(gpu_history_file_name(7), "gpu_history_7.json");
        assert_eq!(detailed_steps_file_name(9), "detailed_steps_9.json");
    }
}
