//! One `X` event of the trace before the events of its track are made to nest.

use std::borrow::Cow;
use std::collections::BTreeMap;

use vllm_profiler_format::TraceArg;

/// One `X` event before it is nested.
pub(crate) struct Interval {
    pub(crate) thread_id: u32,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// `step`, `span` or `kernel`: a step sorts before a span of the same extent.
    pub(crate) cat: &'static str,
    pub(crate) name: String,
    pub(crate) args: BTreeMap<Cow<'static, str>, TraceArg>,
}
