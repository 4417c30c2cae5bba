//! What the collector keeps of torch profiler windows (the torch-op level): per op name over
//! every window (`TorchOpBook::by_name`), a summary of each of the newest windows with its top
//! ops, and op executions for the trace. Bounded: past `MAX_OP_NAMES` names the rest share one
//! entry (`NameId::NONE`), and the trace keeps its newest executions.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::history::Bounded;
use crate::names::NameId;

/// Distinct op names with figures of their own.
pub(crate) const MAX_OP_NAMES: usize = 1024;
/// Windows whose summary the report lists (the newest).
pub(crate) const RECENT_WINDOWS: usize = 256;
/// Ops a window's summary lists.
pub(crate) const TOP_OPS: usize = 10;
/// Windows waiting for the collector; past it a window is lost and counted.
#[cfg(feature = "recorder")]
pub(crate) const INBOX_WINDOWS: usize = 8;

/// Figures of one op name, over a window or over every window. Device and memory figures are
/// `None` where the torch profiler had none (no device, memory not profiled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpFigures {
    pub(crate) calls: u64,
    pub(crate) host_ns: u64,
    pub(crate) self_host_ns: u64,
    pub(crate) device_ns: Option<u64>,
    pub(crate) self_device_ns: Option<u64>,
    pub(crate) self_cpu_memory_bytes: Option<i64>,
    pub(crate) self_device_memory_bytes: Option<i64>,
}

fn add_time(total: &mut Option<u64>, more: Option<u64>) {
    if let Some(more) = more {
        *total = Some(total.unwrap_or(0).saturating_add(more));
    }
}

fn add_bytes(total: &mut Option<i64>, more: Option<i64>) {
    if let Some(more) = more {
        *total = Some(total.unwrap_or(0).saturating_add(more));
    }
}

impl OpFigures {
    pub(crate) fn add(&mut self, more: &OpFigures) {
        self.calls = self.calls.saturating_add(more.calls);
        self.host_ns = self.host_ns.saturating_add(more.host_ns);
        self.self_host_ns = self.self_host_ns.saturating_add(more.self_host_ns);
        add_time(&mut self.device_ns, more.device_ns);
        add_time(&mut self.self_device_ns, more.self_device_ns);
        add_bytes(&mut self.self_cpu_memory_bytes, more.self_cpu_memory_bytes);
        add_bytes(
            &mut self.self_device_memory_bytes,
            more.self_device_memory_bytes,
        );
    }

    /// What a window's top ops are ranked by: self device time where there is one, else self
    /// host time.
    fn rank(&self) -> (u64, u64) {
        (self.self_device_ns.unwrap_or(0), self.self_host_ns)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowOp {
    /// `NameId::NONE`: names the session's table had no room for.
    pub(crate) name: NameId,
    pub(crate) figures: OpFigures,
}

/// One op execution in the trace, on its track (`crate::trace_torch_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct TraceOp {
    pub(crate) track: u32,
    pub(crate) name: NameId,
    /// On the session's clock.
    pub(crate) start_ns: u64,
    pub(crate) duration_ns: u64,
}

/// One window as the recorder hands it to the collector: names interned, times on the
/// session's clock. Journaled as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Window {
    pub(crate) thread_id: u32,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) steps: u32,
    pub(crate) ops: Vec<WindowOp>,
    pub(crate) events: Vec<TraceOp>,
    /// Executions left out of `events`, by the sender or the recorder.
    pub(crate) dropped_events: u64,
}

/// What the report lists of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowSummary {
    pub(crate) index: u64,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) steps: u32,
    pub(crate) op_names: u32,
    pub(crate) trace_events: u64,
    pub(crate) dropped_events: u64,
    pub(crate) top: Vec<WindowOp>,
}

/// Every window the collector took.
#[derive(Debug)]
pub(crate) struct TorchOpBook {
    pub(crate) windows: u64,
    pub(crate) dropped_events: u64,
    pub(crate) by_name: FxHashMap<NameId, OpFigures>,
    pub(crate) recent: Bounded<WindowSummary>,
    pub(crate) trace: Bounded<TraceOp>,
}

impl TorchOpBook {
    pub(crate) fn new(trace_capacity: usize) -> TorchOpBook {
        TorchOpBook {
            windows: 0,
            dropped_events: 0,
            by_name: FxHashMap::default(),
            recent: Bounded::new(RECENT_WINDOWS),
            trace: Bounded::new(trace_capacity),
        }
    }

    /// Folds a window in.
    pub(crate) fn add(&mut self, window: &Window) {
        for op in &window.ops {
            let name = if self.by_name.len() < MAX_OP_NAMES || self.by_name.contains_key(&op.name) {
                op.name
            } else {
                NameId::NONE
            };
            self.by_name.entry(name).or_default().add(&op.figures);
        }
        let mut top = window.ops.clone();
        top.sort_by_key(|op| std::cmp::Reverse(op.figures.rank()));
        top.truncate(TOP_OPS);
        self.recent.push(WindowSummary {
            index: self.windows,
            start_ns: window.start_ns,
            end_ns: window.end_ns,
            steps: window.steps,
            op_names: u32::try_from(window.ops.len()).unwrap_or(u32::MAX),
            trace_events: window.events.len() as u64,
            dropped_events: window.dropped_events,
            top,
        });
        self.windows = self.windows.saturating_add(1);
        self.dropped_events = self.dropped_events.saturating_add(window.dropped_events);
        for event in &window.events {
            self.trace.push(*event);
        }
    }
}

/// Windows the recorders handed over, for the collector: a bounded list it empties at each
/// drain, so that a recording thread never takes the collector's lock.
#[derive(Default)]
pub(crate) struct TorchOpInbox {
    windows: parking_lot::Mutex<Vec<Window>>,
}

impl TorchOpInbox {
    /// Keeps `window` unless `INBOX_WINDOWS` wait already; returns whether it was kept.
    #[cfg(feature = "recorder")]
    pub(crate) fn push(&self, window: Window) -> bool {
        let mut windows = self.windows.lock();
        let room = windows.len() < INBOX_WINDOWS;
        if room {
            windows.push(window);
        }
        room
    }

    pub(crate) fn take(&self) -> Vec<Window> {
        std::mem::take(&mut *self.windows.lock())
    }
}

/// Whether every name id of `window` is one of a table of `names` entries.
pub(crate) fn window_ids_are_known(window: &Window, names: usize) -> bool {
    (window.ops.iter()).all(|o| o.name.is_known_in(names))
        && (window.events.iter()).all(|e| e.name.is_known_in(names))
}

/// An op's name as the reports write it: `(other ops)` for the names without a table entry.
pub(crate) fn op_name(name: NameId, names: &[std::sync::Arc<str>]) -> String {
    (name != NameId::NONE)
        .then(|| names.get(name.0 as usize).map(|n| n.to_string()))
        .flatten()
        .unwrap_or_else(|| vllm_profiler_format::TorchOpPerformance::OTHER_OPS.to_owned())
}

/// The book's part of a journal snapshot.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct TorchOpsState {
    windows: u64,
    dropped_events: u64,
    by_name: Vec<(NameId, OpFigures)>,
    recent: Vec<WindowSummary>,
    recent_dropped: u64,
    trace: Vec<TraceOp>,
    trace_dropped: u64,
}

impl TorchOpsState {
    pub(crate) fn capture(book: &TorchOpBook) -> TorchOpsState {
        TorchOpsState {
            windows: book.windows,
            dropped_events: book.dropped_events,
            by_name: {
                let mut by_name: Vec<_> = book.by_name.iter().map(|(n, f)| (*n, *f)).collect();
                by_name.sort_by_key(|(n, _)| n.0);
                by_name
            },
            recent: book.recent.iter().cloned().collect(),
            recent_dropped: book.recent.dropped(),
            trace: book.trace.iter().copied().collect(),
            trace_dropped: book.trace.dropped(),
        }
    }

    pub(crate) fn restore(self, book: &mut TorchOpBook) {
        book.windows = self.windows;
        book.dropped_events = self.dropped_events;
        book.by_name = self.by_name.into_iter().collect();
        book.recent = Bounded::restore(RECENT_WINDOWS, self.recent, self.recent_dropped);
        let capacity = book.trace.capacity();
        book.trace = Bounded::restore(capacity, self.trace, self.trace_dropped);
    }

    pub(crate) fn ids_are_known(&self, names: usize) -> bool {
        self.by_name.iter().all(|(n, _)| n.is_known_in(names))
            && (self.recent.iter()).all(|w| w.top.iter().all(|o| o.name.is_known_in(names)))
            && self.trace.iter().all(|e| e.name.is_known_in(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: u32, self_host_ns: u64, self_device_ns: Option<u64>) -> WindowOp {
        WindowOp {
            name: NameId(name),
            figures: OpFigures {
                calls: 2,
                host_ns: self_host_ns * 2,
                self_host_ns,
                device_ns: self_device_ns,
                self_device_ns,
                self_cpu_memory_bytes: Some(-4),
                self_device_memory_bytes: None,
            },
        }
    }

    fn window(ops: Vec<WindowOp>) -> Window {
        Window {
            thread_id: 7,
            start_ns: 10,
            end_ns: 20,
            steps: 5,
            ops,
            events: Vec::new(),
            dropped_events: 3,
        }
    }

    #[test]
    fn windows_add_up_per_name_and_rank_their_top_ops() {
        let mut book = TorchOpBook::new(16);
        book.add(&window(vec![op(1, 100, None), op(2, 300, None)]));
        book.add(&window(vec![op(1, 50, Some(9)), op(3, 1, Some(10))]));
        assert_eq!(book.windows, 2);
        assert_eq!(book.dropped_events, 6);
        let one = book.by_name[&NameId(1)];
        assert_eq!((one.calls, one.self_host_ns, one.host_ns), (4, 150, 300));
        assert_eq!(
            one.self_device_ns,
            Some(9),
            "only the window with a device counts"
        );
        assert_eq!(one.self_cpu_memory_bytes, Some(-8));
        assert_eq!(one.self_device_memory_bytes, None);
        let firsts: Vec<_> = book.recent.iter().map(|w| w.top[0].name).collect();
        assert_eq!(
            firsts,
            [NameId(2), NameId(3)],
            "host time, then device time first"
        );
    }

    #[test]
    fn names_past_the_limit_share_one_entry() {
        let mut book = TorchOpBook::new(16);
        let ops = (0..MAX_OP_NAMES as u32 + 2)
            .map(|n| op(n, 1, None))
            .collect();
        book.add(&window(ops));
        assert_eq!(book.by_name.len(), MAX_OP_NAMES + 1);
        assert_eq!(book.by_name[&NameId::NONE].calls, 4);
        assert_eq!(book.recent.iter().next().unwrap().top.len(), TOP_OPS);
    }
}
