//! Kernels in the trace: one track per device and stream, beside the host threads, named
//! `GPU <device> stream <stream>`. A track's id has the top bit set, which no Linux thread id
//! has (they are below 2^22), so that it never merges with a thread's.

use std::borrow::Cow;
use std::sync::Arc;

use vllm_profiler_format::{KernelPerformance, TraceArg};

use crate::event::{KernelEvent, KERNEL_FROM_GRAPH};
use crate::names::NameId;
use crate::trace_interval::Interval;

const TRACK_BIT: u32 = 1 << 31;
const DEVICE_SHIFT: u32 = 24;
const DEVICE_MASK: u32 = 0x7f;
const STREAM_MASK: u32 = 0xff_ffff;

/// A kernel as the trace keeps it: its record and the thread that launched it (0: unknown).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct TraceKernel {
    pub thread_id: u32,
    pub kernel: KernelEvent,
}

fn track_id(device: u16, stream: u32) -> u32 {
    TRACK_BIT | ((u32::from(device) & DEVICE_MASK) << DEVICE_SHIFT) | (stream & STREAM_MASK)
}

/// The name of a kernel track; `None` for a thread's id.
pub(crate) fn track_name(tid: u32) -> Option<String> {
    (tid & TRACK_BIT != 0).then(|| {
        let device = (tid >> DEVICE_SHIFT) & DEVICE_MASK;
        format!("GPU {device} stream {}", tid & STREAM_MASK)
    })
}

pub(crate) fn kernel_interval(traced: &TraceKernel, names: &[Arc<str>]) -> Interval {
    let k = &traced.kernel;
    let name_of = |id: NameId| names.get(id.0 as usize).map(|n| n.to_string());
    let mut args = std::collections::BTreeMap::new();
    if traced.thread_id != 0 {
        let thread = TraceArg::Count(u64::from(traced.thread_id));
        args.insert(Cow::Borrowed("launched_by_thread"), thread);
    }
    if let Some(span) = name_of(k.span) {
        args.insert(Cow::Borrowed("span"), TraceArg::Text(span));
    }
    if k.flags & KERNEL_FROM_GRAPH != 0 {
        args.insert(Cow::Borrowed("cuda_graph"), TraceArg::Count(1));
    }
    Interval {
        thread_id: track_id(k.device, k.stream),
        start_ns: k.start_ns,
        end_ns: k.start_ns.saturating_add(k.duration_ns),
        cat: "kernel",
        name: name_of(k.name).unwrap_or_else(|| KernelPerformance::OTHER_KERNELS.to_owned()),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_are_named_by_device_and_stream_and_never_a_thread() {
        let id = track_id(3, 17);
        assert_eq!(track_name(id).as_deref(), Some("GPU 3 stream 17"));
        assert_eq!(track_name(4_194_303), None, "the largest Linux thread id");
    }
}
