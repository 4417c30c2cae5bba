//! The kernel level's part of a journal snapshot (`crate::journal_state::State`): the
//! per-name totals with their histograms as (value, count) pairs, the traced kernels and the
//! early kernels, captured and restored, and the id checks a snapshot or batch must pass.

use serde::{Deserialize, Serialize};

use crate::event::KernelEvent;
use crate::history::Bounded;
use crate::kept::Kept;
use crate::kernels::{KernelBook, KernelTotals, StepKernels};
use crate::names::NameId;
use crate::trace_kernels::TraceKernel;

#[derive(Serialize, Deserialize)]
struct TotalsState {
    name: NameId,
    count: u64,
    graph_count: u64,
    total_ns: u64,
    max_ns: u64,
    slowest_launch: NameId,
    histogram: Vec<(u64, u64)>,
}

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct KernelsState {
    totals: Vec<TotalsState>,
    records: u64,
    unattributed: u64,
    trace: Vec<TraceKernel>,
    trace_dropped: u64,
    early: Vec<((u32, u32), StepKernels)>,
}

impl KernelsState {
    pub(crate) fn capture(kept: &Kept) -> KernelsState {
        let book = &kept.totals.kernels;
        let mut totals: Vec<TotalsState> = (book.by_name.iter())
            .map(|(name, t)| TotalsState {
                name: *name,
                count: t.count,
                graph_count: t.graph_count,
                total_ns: t.total_ns,
                max_ns: t.max_ns,
                slowest_launch: t.slowest_launch,
                histogram: (t.histogram.iter_recorded())
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect(),
            })
            .collect();
        totals.sort_by_key(|t| t.name.0);
        KernelsState {
            totals,
            records: book.records,
            unattributed: book.unattributed,
            trace: kept.trace_kernels.iter().copied().collect(),
            trace_dropped: kept.trace_kernels.dropped(),
            early: kept.early_kernels.clone(),
        }
    }

    pub(crate) fn restore(self, kept: &mut Kept) {
        let mut book = KernelBook {
            records: self.records,
            unattributed: self.unattributed,
            ..KernelBook::default()
        };
        for t in self.totals {
            let mut totals = KernelTotals::new();
            totals.count = t.count;
            totals.graph_count = t.graph_count;
            totals.total_ns = t.total_ns;
            totals.max_ns = t.max_ns;
            totals.slowest_launch = t.slowest_launch;
            for (value, count) in t.histogram {
                let _ = totals.histogram.record_n(value, count);
            }
            book.by_name.insert(t.name, totals);
        }
        kept.totals.kernels = book;
        let capacity = kept.trace_kernels.capacity();
        kept.trace_kernels = Bounded::restore(capacity, self.trace, self.trace_dropped);
        kept.early_kernels = self.early;
    }

    /// Whether every id names an entry of its table (`names` and `shapes` entries).
    pub(crate) fn ids_are_known(&self, names: usize, shapes: usize) -> bool {
        let totals_ok = self.totals.iter().all(|t| {
            t.name.is_known_in(names)
                && t.slowest_launch.is_known_in(shapes)
                && t.count >= t.graph_count
        });
        totals_ok
            && self
                .trace
                .iter()
                .all(|t| event_ids_are_known(&t.kernel, names, shapes))
            && self.early.iter().all(|(_, k)| step_ids_are_known(k, names))
    }
}

pub(crate) fn event_ids_are_known(kernel: &KernelEvent, names: usize, shapes: usize) -> bool {
    kernel.name != NameId::NONE
        && kernel.name.is_known_in(names)
        && kernel.span.is_known_in(names)
        && kernel.launch.is_known_in(shapes)
}

pub(crate) fn step_ids_are_known(kernels: &StepKernels, names: usize) -> bool {
    kernels.names.iter().all(|n| n.name.is_known_in(names))
}
