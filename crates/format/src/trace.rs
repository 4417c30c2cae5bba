//! `trace_<pid>.json`: the Chrome trace event format.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
