//! What the collector makes of the events it drains: each kept step with its layers, the
//! running totals over every step and span, and the feed of drained events the journal has not
//! written yet. `Kept::ingest` is the one place an event is folded in, for the live collector
//! and for a session rebuilt from a journal alike.

use std::sync::Arc;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use crate::history::Bounded;
use crate::names::NameId;
use crate::recorder::{Event, SpanEvent, StepEvent};
use crate::trace::{self, TraceSpan};
/// A step as kept in the bounded history: names as ids, times in nanoseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct KeptStep {
    pub(super) step_id: u64,
    pub(super) thread_id: u32,
    pub(super) event: StepEvent,
    /// Shared, so that an export's snapshot of the history is a reference-count bump per step.
    pub(super) layers: Arc<[KeptLayer]>,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) struct KeptLayer {
    pub(super) name: NameId,
    pub(super) parent: NameId,
    pub(super) depth: u32,
    pub(super) calls: u32,
    /// Shapes of the first call that carried some; `NameId::NONE` when none did.
    pub(super) shapes: NameId,
    /// How many calls carried a memory delta, and their sum (MiB).
    pub(super) memory_calls: u32,
    pub(super) total_ns: u64,
    pub(super) memory_delta_mb: f64,
}

/// A span's memory delta as (calls carrying one, sum): (0, 0) when it carried none.
pub(super) fn memory_of(span: &SpanEvent) -> (u32, f64) {
    if span.memory_delta_mb.is_finite() {
        (1, f64::from(span.memory_delta_mb))
    } else {
        (0, 0.0)
    }
}

/// Span totals of one step, built while its spans arrive.
#[derive(Default)]
pub(super) struct StepBuilder {
    pub(super) layers: Vec<KeptLayer>,
    pub(super) index: FxHashMap<NameId, usize>,
}

impl StepBuilder {
    pub(super) fn add(&mut self, span: &SpanEvent) {
        let (memory_calls, memory_delta_mb) = memory_of(span);
        match self.index.get(&span.name) {
            Some(&i) => {
                let layer = &mut self.layers[i];
                layer.calls = layer.calls.saturating_add(1);
                layer.total_ns = layer.total_ns.saturating_add(span.duration_ns);
                layer.memory_calls = layer.memory_calls.saturating_add(memory_calls);
                layer.memory_delta_mb += memory_delta_mb;
                if layer.shapes == NameId::NONE {
                    layer.shapes = span.shapes;
                }
            }
            None => {
                self.index.insert(span.name, self.layers.len());
                self.layers.push(KeptLayer {
                    name: span.name,
                    parent: span.parent,
                    depth: span.depth,
                    calls: 1,
                    shapes: span.shapes,
                    memory_calls,
                    total_ns: span.duration_ns,
                    memory_delta_mb,
                });
            }
        }
    }
}

/// Builders of steps whose end has not arrived, per thread. Bounded so that steps that are
/// never ended cannot grow memory without limit.
const MAX_PENDING_STEPS: usize = 1024;

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct LayerTotals {
    pub(super) calls: u64,
    pub(super) total_ns: u64,
    /// Calls that carried a memory delta, and the sum of those deltas (MiB).
    pub(super) memory_calls: u64,
    pub(super) memory_delta_mb: f64,
}

/// Running totals over every step and span ever collected.
#[derive(Clone)]
pub(super) struct Aggregates {
    pub(super) total_steps: u64,
    /// Steps that scheduled nothing (batch size and tokens 0): in no other total.
    pub(super) empty_steps: u64,
    pub(super) total_ns: u128,
    pub(super) min_ns: u64,
    pub(super) max_ns: u64,
    pub(super) histogram: Histogram<u64>,
    pub(super) total_tokens: u64,
    pub(super) total_batch: u64,
    pub(super) first_start_ns: u64,
    pub(super) last_end_ns: u64,
    pub(super) memory_sum: f64,
    pub(super) memory_count: u64,
    pub(super) memory_max: f64,
    pub(super) layers: Vec<LayerTotals>,
    pub(super) total_spans: u64,
}

impl Aggregates {
    pub(super) fn new() -> Self {
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
        }
    }

    pub(super) fn add_step(&mut self, step: &StepEvent) {
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

    pub(super) fn add_layer(
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

/// What the collector has made of every event: totals and bounded histories.
pub(super) struct Kept {
    pub(super) totals: Aggregates,
    pub(super) history: Bounded<KeptStep>,
    /// The newest spans, one by one, for the trace.
    pub(super) trace_spans: Bounded<TraceSpan>,
    pub(super) next_step_id: u64,
}

/// Most drained events held for the journal between two of its writes (64 MiB). Past it they
/// are let go, and the journal's next write is a whole snapshot instead.
pub(super) const FEED_LIMIT: usize = 1 << 20;

/// The drained events the journal has not written yet, in drain order. Kept only while the
/// journal is open.
#[derive(Default)]
pub(super) struct Feed {
    pub(super) active: bool,
    pub(super) events: Vec<(u32, Event)>,
    /// Events were let go: the journal must write a snapshot.
    pub(super) overflowed: bool,
}

impl Feed {
    #[inline]
    pub(super) fn push(&mut self, thread_id: u32, event: &Event) {
        if !self.active {
            return;
        }
        if self.events.len() < FEED_LIMIT {
            self.events.push((thread_id, *event));
        } else {
            self.events.clear();
            self.overflowed = true;
        }
    }
}

impl Kept {
    pub(super) fn new(max_history: usize) -> Kept {
        Kept {
            totals: Aggregates::new(),
            history: Bounded::new(max_history),
            trace_spans: Bounded::new(trace::span_capacity(max_history)),
            next_step_id: 0,
        }
    }

    /// Whether anything was ever collected.
    pub(super) fn any(&self) -> bool {
        self.totals.total_steps > 0 || self.totals.empty_steps > 0 || self.totals.total_spans > 0
    }

    /// Folds one event of thread `thread_id` in; `pending` holds that thread's builders of
    /// steps not ended yet.
    pub(super) fn ingest(
        &mut self,
        pending: &mut FxHashMap<u64, StepBuilder>,
        thread_id: u32,
        event: Event,
    ) {
        match event {
            Event::Span(span) => {
                self.trace_spans.push(TraceSpan {
                    thread_id,
                    name: span.name,
                    start_ns: span.start_ns,
                    duration_ns: span.duration_ns,
                });
                let (memory_calls, memory_delta_mb) = memory_of(&span);
                self.totals.add_layer(
                    span.name,
                    1,
                    span.duration_ns,
                    (u64::from(memory_calls), memory_delta_mb),
                );
                if span.step_seq != 0 {
                    if pending.len() >= MAX_PENDING_STEPS && !pending.contains_key(&span.step_seq) {
                        // A step that is never ended keeps its builder: forget the oldest one
                        // (smallest sequence number).
                        if let Some(&oldest) = pending.keys().min() {
                            pending.remove(&oldest);
                        }
                    }
                    pending.entry(span.step_seq).or_default().add(&span);
                }
            }
            Event::Step(step) => {
                let layers = pending
                    .remove(&step.seq)
                    .map(|b| Arc::from(b.layers))
                    .unwrap_or_default();
                if step.batch_size == 0 && step.num_tokens == 0 {
                    // Scheduled nothing: counted, and kept out of every duration and rate.
                    self.totals.empty_steps = self.totals.empty_steps.saturating_add(1);
                    return;
                }
                self.totals.add_step(&step);
                self.history.push(KeptStep {
                    step_id: self.next_step_id,
                    thread_id,
                    event: step,
                    layers,
                });
                self.next_step_id = self.next_step_id.saturating_add(1);
            }
        }
    }
}
