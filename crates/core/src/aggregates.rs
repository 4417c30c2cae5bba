//! Running totals over every step and span ever collected: counts, sums, extremes, a
//! duration histogram, and per-layer totals indexed by name id. Everything saturates, so a
//! counter never wraps, even fed a hostile journal.

use hdrhistogram::Histogram;

use crate::event::StepEvent;
use crate::kernels::KernelBook;
use crate::names::NameId;

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct LayerTotals {
    pub(crate) calls: u64,
    pub(crate) total_ns: u64,
    /// Calls that carried a memory delta, and the sum of those deltas (MiB).
    pub(crate) memory_calls: u64,
    pub(crate) memory_delta_mb: f64,
    /// Calls whose device time was set, and the sum of those times.
    pub(crate) gpu_calls: u64,
    pub(crate) gpu_ns: u64,
}

/// Running totals over every step and span ever collected.
#[derive(Clone)]
pub(crate) struct Aggregates {
    pub(crate) total_steps: u64,
    /// Steps that scheduled nothing (batch size and tokens 0): in no other total.
    pub(crate) empty_steps: u64,
    pub(crate) total_ns: u128,
    pub(crate) min_ns: u64,
    pub(crate) max_ns: u64,
    pub(crate) histogram: Histogram<u64>,
    pub(crate) total_tokens: u64,
    pub(crate) total_batch: u64,
    pub(crate) first_start_ns: u64,
    pub(crate) last_end_ns: u64,
    pub(crate) memory_sum: f64,
    pub(crate) memory_count: u64,
    pub(crate) memory_max: f64,
    pub(crate) layers: Vec<LayerTotals>,
    pub(crate) total_spans: u64,
    /// Device times whose span or step was no longer found (ended too long before).
    pub(crate) unmatched_gpu_times: u64,
    /// Every kernel record, per kernel name.
    pub(crate) kernels: KernelBook,
}

impl Aggregates {
    pub(crate) fn new() -> Self {
        Aggregates {
            total_steps: 0,
            empty_steps: 0,
            total_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            histogram: Histogram::new(3).expect("3 significant figures is valid"),
            total_tokens: 0,
            total_batch: 0,
            first_start_ns: u64::MAX,
            last_end_ns: 0,
            memory_sum: 0.0,
            memory_count: 0,
            memory_max: f64::MIN,
            layers: Vec::new(),
            total_spans: 0,
            unmatched_gpu_times: 0,
            kernels: KernelBook::default(),
        }
    }

    pub(crate) fn add_step(&mut self, step: &StepEvent) {
        let d = step.duration_ns;
        // Saturating throughout: a counter never wraps, even fed a hostile journal.
        self.total_steps = self.total_steps.saturating_add(1);
        self.total_ns = self.total_ns.saturating_add(u128::from(d));
        self.min_ns = self.min_ns.min(d);
        self.max_ns = self.max_ns.max(d);
        // `record` grows the auto-resizing histogram; `saturating_record` would clamp.
        let _ = self.histogram.record(d.max(1));
        self.total_tokens = self.total_tokens.saturating_add(u64::from(step.num_tokens));
        self.total_batch = self.total_batch.saturating_add(u64::from(step.batch_size));
        self.first_start_ns = self.first_start_ns.min(step.start_ns);
        self.last_end_ns = self.last_end_ns.max(step.start_ns.saturating_add(d));
        if !step.memory_end_mb.is_nan() {
            let m = f64::from(step.memory_end_mb);
            self.memory_sum += m;
            self.memory_count = self.memory_count.saturating_add(1);
            self.memory_max = self.memory_max.max(m);
        }
    }

    /// Adds the device time `ns` of `calls` calls of layer `name`.
    pub(crate) fn add_layer_gpu(&mut self, name: NameId, calls: u64, ns: u64) {
        let Some(layer) = self.layers.get_mut(name.0 as usize) else {
            return; // a name without spans cannot be: its span came first
        };
        layer.gpu_calls = layer.gpu_calls.saturating_add(calls);
        layer.gpu_ns = layer.gpu_ns.saturating_add(ns);
    }

    pub(crate) fn add_layer(
        &mut self,
        name: NameId,
        calls: u64,
        total_ns: u64,
        memory: (u64, f64),
    ) {
        if name == NameId::NONE {
            return;
        }
        let i = name.0 as usize;
        if self.layers.len() <= i {
            self.layers.resize(i + 1, LayerTotals::default());
        }
        let layer = &mut self.layers[i];
        layer.calls = layer.calls.saturating_add(calls);
        layer.total_ns = layer.total_ns.saturating_add(total_ns);
        layer.memory_calls = layer.memory_calls.saturating_add(memory.0);
        layer.memory_delta_mb += memory.1;
        self.total_spans = self.total_spans.saturating_add(calls);
    }
}
