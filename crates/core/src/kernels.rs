//! What the collector keeps of kernel records (`Event::Kernel`): per kernel name over the whole
//! session (`KernelTotals`), and per step (`StepKernels`): how many, their device time, the
//! device's busy time and the names that took it. Bounded: past `MAX_KERNEL_NAMES` names the
//! rest share one entry, and a step keeps its `MAX_STEP_NAMES` first names.

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use crate::event::{KernelEvent, KERNEL_FROM_GRAPH};
use crate::names::NameId;

/// Distinct kernel names with totals of their own (each holds a histogram of about 24 KB).
pub(crate) const MAX_KERNEL_NAMES: usize = 512;
/// Distinct kernel names one step keeps figures for; the rest count in its totals only.
pub(crate) const MAX_STEP_NAMES: usize = 32;
/// How many names a step's record lists, slowest first.
pub(crate) const TOP_KERNELS: usize = 5;

/// One kernel name over the whole session.
#[derive(Clone)]
pub(crate) struct KernelTotals {
    pub(crate) count: u64,
    pub(crate) graph_count: u64,
    pub(crate) total_ns: u64,
    pub(crate) max_ns: u64,
    /// Launch configuration of the slowest launch (JSON in the shapes table).
    pub(crate) slowest_launch: NameId,
    pub(crate) histogram: Histogram<u64>,
}

impl KernelTotals {
    pub(crate) fn new() -> Self {
        KernelTotals {
            count: 0,
            graph_count: 0,
            total_ns: 0,
            max_ns: 0,
            slowest_launch: NameId::NONE,
            // Two significant figures: 1 % is enough for a p99, at a tenth of the memory of 3.
            histogram: Histogram::new(2).expect("2 significant figures is valid"),
        }
    }

    pub(crate) fn add(&mut self, kernel: &KernelEvent) {
        let ns = kernel.duration_ns;
        self.count = self.count.saturating_add(1);
        if kernel.flags & KERNEL_FROM_GRAPH != 0 {
            self.graph_count = self.graph_count.saturating_add(1);
        }
        self.total_ns = self.total_ns.saturating_add(ns);
        if ns >= self.max_ns || self.slowest_launch == NameId::NONE {
            self.max_ns = self.max_ns.max(ns);
            if kernel.launch != NameId::NONE {
                self.slowest_launch = kernel.launch;
            }
        }
        let _ = self.histogram.record(ns.max(1));
    }
}

/// Every kernel name's totals, and what was counted without a name of its own.
#[derive(Clone, Default)]
pub(crate) struct KernelBook {
    pub(crate) by_name: FxHashMap<NameId, KernelTotals>,
    /// Kernels of names past `MAX_KERNEL_NAMES`, under `NameId::NONE`.
    pub(crate) records: u64,
    /// Kernels whose step was not found (or launched outside every step).
    pub(crate) unattributed: u64,
}

impl KernelBook {
    pub(crate) fn add(&mut self, kernel: &KernelEvent) {
        self.records = self.records.saturating_add(1);
        let key =
            if self.by_name.contains_key(&kernel.name) || self.by_name.len() < MAX_KERNEL_NAMES {
                kernel.name
            } else {
                NameId::NONE
            };
        self.by_name
            .entry(key)
            .or_insert_with(KernelTotals::new)
            .add(kernel);
    }
}

/// One kernel name inside one step.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct StepKernelName {
    pub(crate) name: NameId,
    pub(crate) count: u32,
    pub(crate) total_ns: u64,
}

/// The kernels of one step.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct StepKernels {
    pub(crate) count: u32,
    pub(crate) total_ns: u64,
    /// Time at least one of its kernels ran, per device, summed over devices.
    pub(crate) busy_ns: u64,
    /// Per device, the latest end counted into `busy_ns`.
    covered_until: Vec<(u16, u64)>,
    pub(crate) names: Vec<StepKernelName>,
}

impl StepKernels {
    /// Counts one kernel. Busy time is the union of kernel intervals as they arrive: a kernel
    /// that overlaps what is counted adds only what lies past it. Records arrive in about
    /// device order; one that arrives after a later one and falls in a gap before it adds 0.
    pub(crate) fn add(&mut self, kernel: &KernelEvent) {
        self.count = self.count.saturating_add(1);
        self.total_ns = self.total_ns.saturating_add(kernel.duration_ns);
        let end = kernel.start_ns.saturating_add(kernel.duration_ns);
        let covered = match self
            .covered_until
            .iter_mut()
            .find(|(d, _)| *d == kernel.device)
        {
            Some((_, until)) => until,
            None => {
                self.covered_until.push((kernel.device, 0));
                &mut self.covered_until.last_mut().expect("just pushed").1
            }
        };
        let from = kernel.start_ns.max(*covered);
        if end > from {
            self.busy_ns = self.busy_ns.saturating_add(end - from);
            *covered = end;
        }
        self.add_name(StepKernelName {
            name: kernel.name,
            count: 1,
            total_ns: kernel.duration_ns,
        });
    }

    fn add_name(&mut self, entry: StepKernelName) {
        if let Some(mine) = self.names.iter_mut().find(|n| n.name == entry.name) {
            mine.count = mine.count.saturating_add(entry.count);
            mine.total_ns = mine.total_ns.saturating_add(entry.total_ns);
        } else if self.names.len() < MAX_STEP_NAMES {
            self.names.push(entry);
        }
    }

    /// Folds in kernels counted before the step was known (see `Kept`'s early kernels).
    pub(crate) fn merge(&mut self, other: &StepKernels) {
        self.count = self.count.saturating_add(other.count);
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.busy_ns = self.busy_ns.saturating_add(other.busy_ns);
        for &(device, until) in &other.covered_until {
            match self.covered_until.iter_mut().find(|(d, _)| *d == device) {
                Some((_, mine)) => *mine = (*mine).max(until),
                None => self.covered_until.push((device, until)),
            }
        }
        for entry in &other.names {
            self.add_name(*entry);
        }
    }

    /// The names that took the most device time, slowest first (ties by name id).
    pub(crate) fn top(&self) -> Vec<StepKernelName> {
        let mut names = self.names.clone();
        names.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.name.0.cmp(&b.name.0)));
        names.truncate(TOP_KERNELS);
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(name: u32, device: u16, start_ns: u64, duration_ns: u64) -> KernelEvent {
        KernelEvent {
            step_key: 1,
            span: NameId::NONE,
            name: NameId(name),
            launch: NameId::NONE,
            stream: 7,
            device,
            flags: 0,
            start_ns,
            duration_ns,
        }
    }

    #[test]
    fn busy_time_counts_overlap_once_per_device() {
        let mut step = StepKernels::default();
        step.add(&kernel(1, 0, 100, 50)); // 100..150
        step.add(&kernel(2, 0, 120, 50)); // 120..170: adds 20
        step.add(&kernel(1, 0, 200, 10)); // gap: adds 10
        step.add(&kernel(1, 1, 100, 30)); // another device: adds 30
        assert_eq!((step.count, step.total_ns, step.busy_ns), (4, 140, 110));
        let top = step.top();
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].name, top[0].count, top[0].total_ns),
            (NameId(1), 3, 90)
        );
        assert_eq!(
            (top[1].name, top[1].count, top[1].total_ns),
            (NameId(2), 1, 50)
        );
    }

    #[test]
    fn names_past_the_limits_share_one_entry() {
        let mut book = KernelBook::default();
        for name in 0..(MAX_KERNEL_NAMES as u32 + 3) {
            book.add(&kernel(name, 0, 0, 5));
        }
        assert_eq!(book.by_name.len(), MAX_KERNEL_NAMES + 1);
        assert_eq!(book.by_name[&NameId::NONE].count, 3);
        assert_eq!(book.records, MAX_KERNEL_NAMES as u64 + 3);
        let mut step = StepKernels::default();
        for name in 0..40 {
            step.add(&kernel(name, 0, u64::from(name) * 10, 5));
        }
        assert_eq!((step.count, step.names.len()), (40, MAX_STEP_NAMES));
    }
}
