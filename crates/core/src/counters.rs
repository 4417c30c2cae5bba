//! Counters bumped on the rare paths of the recording threads (a full ring, an auto-closed
//! span, a thread that exits with steps open), read by every report.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct HotCounters {
    pub lost_events: AtomicU64,
    pub auto_closed_spans: AtomicU64,
    /// Steps never ended: open when their thread exited, or abandoned at the open-steps limit.
    pub unfinished_steps: AtomicU64,
    /// Spans never ended: open when their thread exited, or abandoned at the nesting limit.
    pub unfinished_spans: AtomicU64,
    /// Kernel records the collector never got: its inbox was full.
    pub lost_kernel_records: AtomicU64,
    /// Kernel records CUPTI dropped because it had no buffer for them.
    pub dropped_kernel_records: AtomicU64,
    /// Torch profiler windows the collector never got: its inbox was full.
    pub lost_torch_op_windows: AtomicU64,
}

/// The counters' values in the order of [`HotCounters::values`]: lost events, auto-closed
/// spans, unfinished steps, unfinished spans, lost and dropped kernel records, lost torch op
/// windows (as the journal holds them).
pub(crate) type CounterValues = [u64; 7];

impl HotCounters {
    pub(crate) fn values(&self) -> CounterValues {
        [
            self.lost_events.load(Ordering::Relaxed),
            self.auto_closed_spans.load(Ordering::Relaxed),
            self.unfinished_steps.load(Ordering::Relaxed),
            self.unfinished_spans.load(Ordering::Relaxed),
            self.lost_kernel_records.load(Ordering::Relaxed),
            self.dropped_kernel_records.load(Ordering::Relaxed),
            self.lost_torch_op_windows.load(Ordering::Relaxed),
        ]
    }

    pub(crate) fn set(&self, values: CounterValues) {
        self.lost_events.store(values[0], Ordering::Relaxed);
        self.auto_closed_spans.store(values[1], Ordering::Relaxed);
        self.unfinished_steps.store(values[2], Ordering::Relaxed);
        self.unfinished_spans.store(values[3], Ordering::Relaxed);
        self.lost_kernel_records.store(values[4], Ordering::Relaxed);
        self.dropped_kernel_records
            .store(values[5], Ordering::Relaxed);
        self.lost_torch_op_windows
            .store(values[6], Ordering::Relaxed);
    }
}
