//! `trace_<pid>.json`: the Chrome trace event format.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::GpuSample;

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

impl TraceFile {
    /// Keys of `otherData`: the Unix time of `ts` 0, the run and the parent's pid.
    pub const STARTED_UNIX: &'static str = "started_unix";
    pub const RUN_ID: &'static str = "run_id";
    pub const PARENT_PID: &'static str = "parent_pid";
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

impl TraceEvent {
    /// An `M` event of `kind` (`process_name`, `thread_name`, `process_sort_index`) whose one
    /// argument `key` is `value`.
    pub fn metadata(pid: u32, tid: u32, kind: &str, key: &'static str, value: TraceArg) -> Self {
        TraceEvent {
            name: kind.to_owned(),
            cat: None,
            ph: Cow::Borrowed("M"),
            ts: 0.0,
            dur: None,
            pid,
            tid,
            args: BTreeMap::from([(Cow::Borrowed(key), value)]),
        }
    }
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

/// The counter tracks of the GPU figures: one figure per track, its unit in its name.
/// A counter track: its figure's name with its unit, and how a sample gives the figure.
pub type GpuCounter = (&'static str, fn(&GpuSample) -> Option<f64>);

pub const GPU_COUNTERS: [GpuCounter; 4] = [
    ("utilization (%)", |g| g.gpu_utilization),
    ("memory used (MiB)", |g| g.memory_used_mb),
    ("temperature (°C)", |g| g.temperature),
    ("power (W)", |g| g.power_draw),
];

/// The `C` events of one sample at `ts`, on `pid`: one per figure it has, each on its own
/// track named after `device` (`GPU 0` gives `GPU 0 utilization (%)`), its value in `value`.
pub fn gpu_counter_events(pid: u32, ts: f64, device: &str, sample: &GpuSample) -> Vec<TraceEvent> {
    GPU_COUNTERS
        .iter()
        .filter_map(|(figure, value)| {
            let value = value(sample)?;
            Some(TraceEvent {
                name: format!("{device} {figure}"),
                cat: Some(Cow::Borrowed("gpu")),
                ph: Cow::Borrowed("C"),
                ts,
                dur: None,
                pid,
                tid: 0,
                args: BTreeMap::from([(Cow::Borrowed("value"), TraceArg::Number(value))]),
            })
        })
        .collect()
}
