//! Torch ops in the trace: the executions a torch profiler window recorded, on a track of their
//! own beside the thread that ran them (`torch ops (thread <tid>)`), since the torch profiler's
//! clock may be some microseconds off ours and its ops would not nest in our spans. A track id
//! has bit 30 set, which no Linux thread id has (they are below 2^22) and no kernel track has
//! (bit 31).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::torch_ops::{op_name, TraceOp};
use crate::trace_interval::Interval;

const TRACK_BIT: u32 = 1 << 30;
/// Set for a thread the torch profiler knew by its own id only (not the calling thread).
const TORCH_THREAD_BIT: u32 = 1 << 29;
const THREAD_MASK: u32 = (1 << 22) - 1;

/// The track of the ops of OS thread `thread_id`.
#[cfg_attr(not(feature = "recorder"), allow(dead_code))]
pub(crate) fn thread_track(thread_id: u32) -> u32 {
    TRACK_BIT | (thread_id & THREAD_MASK)
}

/// The track of the ops of the thread the torch profiler calls `torch_thread`.
#[cfg_attr(not(feature = "recorder"), allow(dead_code))]
pub(crate) fn torch_thread_track(torch_thread: u32) -> u32 {
    TRACK_BIT | TORCH_THREAD_BIT | (torch_thread & THREAD_MASK)
}

/// The name of a torch-op track; `None` for any other id.
pub(crate) fn track_name(tid: u32) -> Option<String> {
    if tid & (1 << 31) != 0 || tid & TRACK_BIT == 0 {
        return None;
    }
    let thread = tid & THREAD_MASK;
    Some(if tid & TORCH_THREAD_BIT != 0 {
        format!("torch ops (torch thread {thread})")
    } else {
        format!("torch ops (thread {thread})")
    })
}

pub(crate) fn op_interval(op: &TraceOp, names: &[Arc<str>]) -> Interval {
    Interval {
        thread_id: op.track,
        start_ns: op.start_ns,
        end_ns: op.start_ns.saturating_add(op.duration_ns),
        cat: "torch_op",
        name: op_name(op.name, names),
        args: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_are_named_apart_from_threads_and_kernels() {
        assert_eq!(
            track_name(thread_track(4_194_303)).as_deref(),
            Some("torch ops (thread 4194303)")
        );
        assert_eq!(
            track_name(torch_thread_track(2)).as_deref(),
            Some("torch ops (torch thread 2)")
        );
        assert_eq!(track_name(4_194_303), None, "a Linux thread id");
        assert_eq!(track_name(1 << 31 | 1 << 30), None, "a kernel track");
    }
}
