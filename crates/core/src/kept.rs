//! What the collector makes of the events it drains: each kept step with its layers, the
//! running totals over every step and span, and the feed of drained events the journal has not
//! written yet. `Kept::ingest` is the one place an event is folded in, for the live collector
//! and for a session rebuilt from a journal alike.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::aggregates::Aggregates;
use crate::event::{add_gpu_time, Event, GpuEvent, KernelEvent, SpanEvent, StepEvent, NO_GPU_TIME};
use crate::history::Bounded;
use crate::kernel_context::step_key;
use crate::kernels::StepKernels;
use crate::names::NameId;
use crate::torch_ops::{TorchOpBook, Window};
use crate::trace::{self, TraceSpan};
use crate::trace_kernels::TraceKernel;

/// A step as kept in the bounded history: names as ids, times in nanoseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeptStep {
    pub(crate) step_id: u64,
    pub(crate) thread_id: u32,
    pub(crate) event: StepEvent,
    /// Shared, so that an export's snapshot of the history is a reference-count bump per step.
    pub(crate) layers: Arc<[KeptLayer]>,
    /// Device time of the step; [`NO_GPU_TIME`] when none was set.
    pub(crate) gpu_ns: u64,
    /// Its kernels, when the kernel tracer saw some; shared like `layers`.
    #[serde(default)]
    pub(crate) kernels: Option<Arc<StepKernels>>,
}

/// How many of the newest traced spans a late device time is looked for in: a few forwards'.
const LATE_TRACE_SPANS: usize = 8192;

/// How many of the newest kept steps (of every thread) a late device time is looked for in,
/// and how many of its own thread's among them. Durations arrive a step or two late; past
/// this they are counted as unmatched.
const LATE_SCAN: usize = 4096;
const LATE_STEPS: usize = 64;
/// Kernel records come a flush period late (up to a few hundred milliseconds): their step is
/// looked for among more of its thread's newest steps.
const KERNEL_LATE_STEPS: usize = 512;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeptLayer {
    pub(crate) name: NameId,
    pub(crate) parent: NameId,
    /// Nesting depth (at most 4096, the open-spans limit).
    pub(crate) depth: u16,
    /// Calls whose device time was set (saturating; `gpu_ns` is their sum).
    pub(crate) gpu_calls: u16,
    pub(crate) calls: u32,
    /// Shapes of the first call that carried some; `NameId::NONE` when none did.
    pub(crate) shapes: NameId,
    /// How many calls carried a memory delta, and their sum (MiB).
    pub(crate) memory_calls: u32,
    pub(crate) total_ns: u64,
    pub(crate) memory_delta_mb: f64,
    /// Device time of its calls in the step; [`NO_GPU_TIME`] when none was set.
    pub(crate) gpu_ns: u64,
}

/// A span's memory delta as (calls carrying one, sum): (0, 0) when it carried none.
pub(crate) fn memory_of(span: &SpanEvent) -> (u32, f64) {
    if span.memory_delta_mb.is_finite() {
        (1, f64::from(span.memory_delta_mb))
    } else {
        (0, 0.0)
    }
}

/// Span totals of one step, built while its spans arrive.
#[derive(Default)]
pub(crate) struct StepBuilder {
    pub(crate) layers: Vec<KeptLayer>,
    pub(crate) index: FxHashMap<NameId, usize>,
    pub(crate) kernels: Option<StepKernels>,
}

impl StepBuilder {
    pub(crate) fn add(&mut self, span: &SpanEvent) {
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
                    depth: u16::try_from(span.depth).unwrap_or(u16::MAX),
                    gpu_calls: 0,
                    calls: 1,
                    shapes: span.shapes,
                    memory_calls,
                    total_ns: span.duration_ns,
                    memory_delta_mb,
                    gpu_ns: NO_GPU_TIME,
                });
            }
        }
    }
}

/// Adds the device time of one call to layer `name` of `layers`; false when the step has no
/// such layer.
fn add_layer_gpu_time(layers: &mut [KeptLayer], name: NameId, ns: u64) -> bool {
    match layers.iter_mut().find(|l| l.name == name) {
        Some(layer) => {
            add_gpu_time(&mut layer.gpu_ns, ns);
            layer.gpu_calls = layer.gpu_calls.saturating_add(1);
            true
        }
        None => false,
    }
}

/// Builders of steps whose end has not arrived, per thread. Bounded so that steps that are
/// never ended cannot grow memory without limit.
const MAX_PENDING_STEPS: usize = 1024;

/// Steps whose kernels arrived before the step itself (no span had opened a builder for it),
/// per (thread, step key); past this many the oldest are let go as unattributed.
const MAX_EARLY_STEPS: usize = 256;

/// What the collector has made of every event: totals and bounded histories.
pub(crate) struct Kept {
    pub(crate) totals: Aggregates,
    pub(crate) history: Bounded<KeptStep>,
    /// The newest spans, one by one, for the trace.
    pub(crate) trace_spans: Bounded<TraceSpan>,
    /// The newest kernels, one by one, for the trace.
    pub(crate) trace_kernels: Bounded<TraceKernel>,
    /// Kernels of steps not ended yet that no builder holds: ((thread, step key), kernels).
    pub(crate) early_kernels: Vec<((u32, u32), StepKernels)>,
    /// Every torch profiler window, and the newest ops for the trace.
    pub(crate) torch_ops: TorchOpBook,
    /// (thread, step key) of the newest steps that scheduled nothing: their late kernels are
    /// unattributed at once rather than waiting among the early ones. Not journaled.
    recent_empty: std::collections::VecDeque<(u32, u32)>,
    pub(crate) next_step_id: u64,
}

/// Most drained events held for the journal between two of its writes (64 MiB). Past it they
/// are let go, and the journal's next write is a whole snapshot instead.
pub(crate) const FEED_LIMIT: usize = 1 << 20;

/// The drained events the journal has not written yet, in drain order. Kept only while the
/// journal is open.
#[derive(Default)]
pub(crate) struct Feed {
    pub(crate) active: bool,
    pub(crate) events: Vec<(u32, Event)>,
    /// Torch profiler windows drained since (after the events).
    pub(crate) windows: Vec<Window>,
    /// Events were let go: the journal must write a snapshot.
    pub(crate) overflowed: bool,
}

impl Feed {
    #[inline]
    pub(crate) fn push(&mut self, thread_id: u32, event: &Event) {
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

    pub(crate) fn push_window(&mut self, window: Window) {
        if self.active {
            self.windows.push(window);
        }
    }
}

impl Kept {
    pub(crate) fn new(max_history: usize) -> Kept {
        Kept {
            totals: Aggregates::new(),
            history: Bounded::new(max_history),
            trace_spans: Bounded::new(trace::span_capacity(max_history)),
            trace_kernels: Bounded::new(trace::span_capacity(max_history)),
            early_kernels: Vec::new(),
            torch_ops: TorchOpBook::new(trace::span_capacity(max_history)),
            recent_empty: std::collections::VecDeque::new(),
            next_step_id: 0,
        }
    }

    /// Whether anything was ever collected.
    pub(crate) fn any(&self) -> bool {
        self.totals.total_steps > 0
            || self.totals.empty_steps > 0
            || self.totals.total_spans > 0
            || self.totals.kernels.records > 0
            || self.torch_ops.windows > 0
    }

    /// Folds one event of thread `thread_id` in; `pending` holds that thread's builders of
    /// steps not ended yet.
    pub(crate) fn ingest(
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
                    seq: span.seq,
                    start_ns: span.start_ns,
                    duration_ns: span.duration_ns,
                    gpu_ns: NO_GPU_TIME,
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
                let (layers, mut kernels) = match pending.remove(&step.seq) {
                    Some(builder) => (Arc::from(builder.layers), builder.kernels),
                    None => (Arc::default(), None),
                };
                let key = (thread_id, step_key(step.seq));
                if let Some(i) = self.early_kernels.iter().position(|(k, _)| *k == key) {
                    let (_, early) = self.early_kernels.remove(i);
                    kernels
                        .get_or_insert_with(StepKernels::default)
                        .merge(&early);
                }
                if step.batch_size == 0 && step.num_tokens == 0 {
                    // Scheduled nothing: counted, and kept out of every duration and rate.
                    self.totals.empty_steps = self.totals.empty_steps.saturating_add(1);
                    if self.recent_empty.len() >= MAX_EARLY_STEPS {
                        self.recent_empty.pop_front();
                    }
                    self.recent_empty.push_back(key);
                    if let Some(kernels) = kernels {
                        self.totals.kernels.unattributed = (self.totals.kernels.unattributed)
                            .saturating_add(u64::from(kernels.count));
                    }
                    return;
                }
                self.totals.add_step(&step);
                self.history.push(KeptStep {
                    step_id: self.next_step_id,
                    thread_id,
                    event: step,
                    layers,
                    gpu_ns: NO_GPU_TIME,
                    kernels: kernels.map(Arc::new),
                });
                self.next_step_id = self.next_step_id.saturating_add(1);
            }
            Event::Gpu(gpu) => {
                let matched = self.ingest_gpu(pending, thread_id, gpu);
                if !matched {
                    self.totals.unmatched_gpu_times =
                        self.totals.unmatched_gpu_times.saturating_add(1);
                }
            }
            Event::Kernel(kernel) => self.ingest_kernel(pending, thread_id, kernel),
        }
    }

    /// Folds a kernel into the totals and the trace, and into its step: one being built, one
    /// kept, or, when its step has not ended, the early kernels its end will take.
    fn ingest_kernel(
        &mut self,
        pending: &mut FxHashMap<u64, StepBuilder>,
        thread_id: u32,
        kernel: KernelEvent,
    ) {
        self.totals.kernels.add(&kernel);
        self.trace_kernels.push(TraceKernel { thread_id, kernel });
        let key = kernel.step_key;
        if key == 0 {
            self.totals.kernels.unattributed = self.totals.kernels.unattributed.saturating_add(1);
            return;
        }
        if let Some(builder) = pending.iter_mut().find(|(seq, _)| step_key(**seq) == key) {
            builder
                .1
                .kernels
                .get_or_insert_with(Default::default)
                .add(&kernel);
            return;
        }
        if let Some(step) = (self.history.iter_mut().rev().take(LATE_SCAN))
            .filter(|k| k.thread_id == thread_id)
            .take(KERNEL_LATE_STEPS)
            .find(|k| step_key(k.event.seq) == key)
        {
            // In place unless an export holds them; then a copy, once per export.
            Arc::make_mut(step.kernels.get_or_insert_with(Default::default)).add(&kernel);
            return;
        }
        let early_key = (thread_id, key);
        if self.recent_empty.contains(&early_key) {
            self.totals.kernels.unattributed = self.totals.kernels.unattributed.saturating_add(1);
            return;
        }
        match self.early_kernels.iter_mut().find(|(k, _)| *k == early_key) {
            Some((_, kernels)) => kernels.add(&kernel),
            None => {
                if self.early_kernels.len() >= MAX_EARLY_STEPS {
                    let (_, oldest) = self.early_kernels.remove(0);
                    self.totals.kernels.unattributed =
                        (self.totals.kernels.unattributed).saturating_add(u64::from(oldest.count));
                }
                let mut kernels = StepKernels::default();
                kernels.add(&kernel);
                self.early_kernels.push((early_key, kernels));
            }
        }
    }

    /// Folds a device time into its layer's totals and its step (in progress or kept); false
    /// when its step or layer is not found.
    fn ingest_gpu(
        &mut self,
        pending: &mut FxHashMap<u64, StepBuilder>,
        thread_id: u32,
        gpu: GpuEvent,
    ) -> bool {
        let is_span = gpu.name != NameId::NONE;
        if is_span {
            self.totals.add_layer_gpu(gpu.name, 1, gpu.duration_ns);
            // Its trace entry, if still among the newest.
            if let Some(traced) = (self.trace_spans.iter_mut().rev().take(LATE_TRACE_SPANS))
                .find(|t| t.thread_id == thread_id && t.seq == gpu.span_seq)
            {
                add_gpu_time(&mut traced.gpu_ns, gpu.duration_ns);
            }
            if gpu.step_seq == 0 {
                return true; // a span outside every step: the totals are all it is in
            }
            if let Some(builder) = pending.get_mut(&gpu.step_seq) {
                return add_layer_gpu_time(&mut builder.layers, gpu.name, gpu.duration_ns);
            }
        }
        let Some(step) = (self.history.iter_mut().rev().take(LATE_SCAN))
            .filter(|k| k.thread_id == thread_id)
            .take(LATE_STEPS)
            .find(|k| k.event.seq == gpu.step_seq)
        else {
            return false;
        };
        if !is_span {
            add_gpu_time(&mut step.gpu_ns, gpu.duration_ns);
            return true;
        }
        // In place unless an export holds the layers; then a copy, once per export.
        if let Some(layers) = Arc::get_mut(&mut step.layers) {
            return add_layer_gpu_time(layers, gpu.name, gpu.duration_ns);
        }
        let mut layers = step.layers.to_vec();
        let found = add_layer_gpu_time(&mut layers, gpu.name, gpu.duration_ns);
        step.layers = Arc::from(layers);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_layers_stay_small() {
        // The history holds one per name per step: 10000 steps of 200 layers is 96 MB at 48.
        assert!(
            std::mem::size_of::<KeptLayer>() <= 48,
            "{}",
            std::mem::size_of::<KeptLayer>()
        );
    }
}
