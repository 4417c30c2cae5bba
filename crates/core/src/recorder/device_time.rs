//! Device durations set after their span or step ended (a CUDA event pair resolves late): the
//! recorder finds what the handle named among what it ended last and hands the collector an
//! event that names it.

use super::ThreadRecorder;
use crate::error::{ProfilerError, Result};
use crate::event::{Event, GpuEvent};
use crate::names::NameId;

/// Durations at or past this are refused: no span runs for 292 years, and `u64::MAX` is the
/// "never set" of the reports.
const MAX_GPU_DURATION_NS: u64 = 1 << 63;

fn check_gpu_duration(duration_ns: u64) -> Result<()> {
    if duration_ns >= MAX_GPU_DURATION_NS {
        return Err(ProfilerError::InvalidArgument(
            "a device duration of 2^63 ns or more",
        ));
    }
    Ok(())
}

impl ThreadRecorder {
    /// Sets the device time of span `handle`, which this thread ended (a CUDA event pair
    /// resolves after its span's end): folded into its layer in its step and in the totals.
    /// Once per span; a span ended more than 4096 spans ago, never ended, or lost to a full
    /// buffer is unknown.
    pub fn span_set_gpu_duration(&mut self, handle: u64, duration_ns: u64) -> Result<()> {
        let seq = self.seq_of(handle, "span")?;
        check_gpu_duration(duration_ns)?;
        let unknown = ProfilerError::UnknownHandle {
            kind: "ended span without a device time",
            handle,
        };
        let (name, step_seq) = self.recent_spans.take(seq).ok_or(unknown)?;
        self.push(Event::Gpu(GpuEvent {
            name,
            step_seq,
            span_seq: seq,
            duration_ns,
        }))
    }

    /// Sets the device time of step `handle`, which this thread ended: once, within its last
    /// 64 steps.
    pub fn step_set_gpu_duration(&mut self, handle: u64, duration_ns: u64) -> Result<()> {
        let seq = self.seq_of(handle, "step")?;
        check_gpu_duration(duration_ns)?;
        if self.open_steps.iter().any(|s| s.seq == seq) {
            return Err(ProfilerError::InvalidArgument(
                "the step is still open: set its device duration after it ends",
            ));
        }
        if self.recent_steps.take(seq).is_none() {
            return Err(ProfilerError::UnknownHandle {
                kind: "ended step without a device time",
                handle,
            });
        }
        self.push(Event::Gpu(GpuEvent {
            name: NameId::NONE,
            step_seq: seq,
            span_seq: 0,
            duration_ns,
        }))
    }
}
