//! What the crash-safe journal (`crate::journal`) holds of a session: a snapshot (the whole
//! state at one moment) and batches (what each collector turn drained after it), and the
//! rebuilding of a session from them. The writing is in `crate::journal_turn`, the reading in
//! `crate::recover`.
//!
//! A snapshot is everything an export reads, taken under the collector's lock, so that the
//! batches after it hold exactly the events drained after it. Rebuilt, the session folds the
//! batches' events in through the same `Kept::ingest` as the live collector, so its reports are
//! the ones the process would have written at that moment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use vllm_profiler_format as format;

use crate::aggregates::{Aggregates, LayerTotals};
use crate::collector::Collector;
use crate::counters::CounterValues;
use crate::error::{ProfilerError, Result};
use crate::event::Event;
use crate::history::Bounded;
use crate::journal::{Writer, JOURNAL_VERSION};
use crate::journal_kernels::KernelsState;
use crate::kept::{KeptLayer, KeptStep, StepBuilder};
use crate::kernels::StepKernels;
use crate::samples::SampleStore;
use crate::session::{RunIdentity, Session, Settings};
use crate::torch_ops::{TorchOpsState, Window};
use crate::trace::{self, TraceSpan};

mod check;

/// The whole session at one moment.
#[derive(Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) version: u32,
    /// The journal generation this snapshot starts; its log carries the same.
    pub(crate) generation: u64,
    pub(crate) writer: Writer,
    started_unix: f64,
    process_name: String,
    max_history: u64,
    sample_interval_s: f64,
    role: format::Role,
    rank: Option<u32>,
    run: RunIdentity,
    pub(crate) names: Vec<String>,
    pub(crate) shapes: Vec<String>,
    counters: CounterValues,
    memory_source: format::MemorySource,
    totals: Totals,
    history: Vec<KeptStep>,
    history_dropped: u64,
    trace_spans: Vec<TraceSpan>,
    trace_dropped: u64,
    next_step_id: u64,
    /// Builders of steps whose end was not drained yet: (thread, step sequence, layers,
    /// kernels).
    pending: Vec<(u32, u64, Vec<KeptLayer>, Option<StepKernels>)>,
    kernels: KernelsState,
    torch_ops: TorchOpsState,
    detector: Option<String>,
    devices: Vec<format::GpuDevice>,
    host: Vec<format::HostSample>,
    host_dropped: u64,
    device_samples: Vec<(u32, Vec<format::GpuSample>, u64)>,
}

/// `Aggregates` with its histogram as (value, count) pairs.
#[derive(Serialize, Deserialize)]
struct Totals {
    total_steps: u64,
    empty_steps: u64,
    total_ns: u128,
    min_ns: u64,
    max_ns: u64,
    histogram: Vec<(u64, u64)>,
    total_tokens: u64,
    total_batch: u64,
    first_start_ns: u64,
    last_end_ns: u64,
    memory_sum: f64,
    memory_count: u64,
    memory_max: f64,
    layers: Vec<LayerTotals>,
    total_spans: u64,
    unmatched_gpu_times: u64,
}

/// What one collector drain adds after the snapshot or the batch before it.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Batch {
    /// Names and shapes interned since the previous batch, in id order.
    pub(crate) names: Vec<String>,
    pub(crate) shapes: Vec<String>,
    pub(crate) events: Vec<(u32, Event)>,
    /// Torch profiler windows, folded in after the events.
    pub(crate) windows: Vec<Window>,
    /// One entry per sampler tick: the host and the devices.
    pub(crate) ticks: Vec<(format::HostSample, Vec<format::GpuSample>)>,
    /// The detector and devices, when they were described since.
    pub(crate) devices: Option<(Option<String>, Vec<format::GpuDevice>)>,
    pub(crate) counters: CounterValues,
    pub(crate) memory_source: format::MemorySource,
    pub(crate) role: format::Role,
    pub(crate) rank: Option<u32>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.windows.is_empty()
            && self.ticks.is_empty()
            && self.devices.is_none()
    }
}

impl Aggregates {
    fn to_totals(&self) -> Totals {
        Totals {
            total_steps: self.total_steps,
            empty_steps: self.empty_steps,
            total_ns: self.total_ns,
            min_ns: self.min_ns,
            max_ns: self.max_ns,
            histogram: self
                .histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            total_tokens: self.total_tokens,
            total_batch: self.total_batch,
            first_start_ns: self.first_start_ns,
            last_end_ns: self.last_end_ns,
            memory_sum: self.memory_sum,
            memory_count: self.memory_count,
            memory_max: self.memory_max,
            layers: self.layers.clone(),
            total_spans: self.total_spans,
            unmatched_gpu_times: self.unmatched_gpu_times,
        }
    }

    fn from_totals(t: Totals) -> Aggregates {
        let mut totals = Aggregates::new();
        for (value, count) in t.histogram {
            // The highest value of a bucket falls in that same bucket again.
            let _ = totals.histogram.record_n(value, count);
        }
        Aggregates {
            total_steps: t.total_steps,
            empty_steps: t.empty_steps,
            total_ns: t.total_ns,
            min_ns: t.min_ns,
            max_ns: t.max_ns,
            histogram: totals.histogram,
            total_tokens: t.total_tokens,
            total_batch: t.total_batch,
            first_start_ns: t.first_start_ns,
            last_end_ns: t.last_end_ns,
            memory_sum: t.memory_sum,
            memory_count: t.memory_count,
            memory_max: t.memory_max,
            layers: t.layers,
            total_spans: t.total_spans,
            unmatched_gpu_times: t.unmatched_gpu_times,
            kernels: Default::default(),
        }
    }
}

pub(crate) fn strings(table: Vec<Arc<str>>) -> Vec<String> {
    table.iter().map(|s| s.to_string()).collect()
}

impl Session {
    pub(crate) fn capture(
        &self,
        collector: &Collector,
        samples: &SampleStore,
        settings: &Settings,
    ) -> State {
        let (role, rank) = self.identity();
        let kept = &collector.kept;
        State {
            version: JOURNAL_VERSION,
            generation: 0,
            writer: Writer::this_process(self.pid),
            started_unix: self.started_unix,
            process_name: self
                .recovered_name
                .clone()
                .unwrap_or_else(trace::TraceProcess::own_name),
            max_history: settings.max_history as u64,
            sample_interval_s: settings.sample_interval.as_secs_f64(),
            role,
            rank,
            run: self.run(),
            names: strings(self.interner.snapshot()),
            shapes: strings(self.shapes.snapshot()),
            counters: self.counters.values(),
            memory_source: self.latest.memory_source(),
            totals: kept.totals.to_totals(),
            history: kept.history.iter().cloned().collect(),
            history_dropped: kept.history.dropped(),
            trace_spans: kept.trace_spans.iter().copied().collect(),
            trace_dropped: kept.trace_spans.dropped(),
            next_step_id: kept.next_step_id,
            pending: collector
                .pending()
                .map(|(thread, seq, b)| (thread, seq, b.layers.clone(), b.kernels.clone()))
                .collect(),
            kernels: KernelsState::capture(kept),
            torch_ops: TorchOpsState::capture(&kept.torch_ops),
            detector: samples.detector.map(str::to_owned),
            devices: samples.described_devices.clone(),
            host: samples.host.iter().cloned().collect(),
            host_dropped: samples.host.dropped(),
            device_samples: samples
                .devices
                .iter()
                .map(|(id, h)| (*id, h.iter().cloned().collect(), h.dropped()))
                .collect(),
        }
    }

    /// A session holding `state`, not recording, for its reports.
    pub(crate) fn restore(pid: u32, state: State) -> Result<(Arc<Session>, Pending)> {
        let settings = Settings {
            output_dir: PathBuf::new(),
            sample_interval: Duration::try_from_secs_f64(state.sample_interval_s)
                .unwrap_or_default(),
            export_interval: None,
            max_history: state.max_history.clamp(1, usize::MAX as u64) as usize,
            gpu_monitoring: false,
            journal: false,
        };
        let mut session = Session::new(pid, 0, settings);
        let inner = Arc::get_mut(&mut session).expect("just made");
        inner.started_unix = state.started_unix;
        inner.recovered_name = Some(state.process_name);
        let session = session;
        session.intern_all(&state.names, &state.shapes)?;
        session.counters.set(state.counters);
        session.latest.publish(None, None, state.memory_source);
        session.set_identity(state.role, state.rank);
        *session.run.write() = state.run;
        let mut pending: Pending = FxHashMap::default();
        for (thread, seq, layers, kernels) in state.pending {
            let index = layers
                .iter()
                .enumerate()
                .map(|(i, l)| (l.name, i))
                .collect();
            pending.entry(thread).or_default().insert(
                seq,
                StepBuilder {
                    layers,
                    index,
                    kernels,
                },
            );
        }
        {
            let mut collector = session.collector.lock();
            let kept = &mut collector.kept;
            kept.totals = Aggregates::from_totals(state.totals);
            kept.history = Bounded::restore(
                kept.history.capacity(),
                state.history,
                state.history_dropped,
            );
            kept.trace_spans = Bounded::restore(
                kept.trace_spans.capacity(),
                state.trace_spans,
                state.trace_dropped,
            );
            kept.next_step_id = state.next_step_id;
            state.kernels.restore(kept);
            state.torch_ops.restore(&mut kept.torch_ops);
        }
        {
            let mut store = session.samples.lock();
            let max = session.settings.read().max_history;
            store.detector = state.detector.map(leak);
            store.described_devices = state.devices;
            store.host = Bounded::restore(max, state.host, state.host_dropped);
            store.devices = state
                .device_samples
                .into_iter()
                .map(|(id, samples, dropped)| (id, Bounded::restore(max, samples, dropped)))
                .collect();
        }
        Ok((session, pending))
    }

    fn intern_all(&self, names: &[String], shapes: &[String]) -> Result<()> {
        for (table, texts) in [(&self.interner, names), (&self.shapes, shapes)] {
            for text in texts {
                let expected = table.len();
                let id = table.intern(text.as_bytes())?;
                if id.0 as usize != expected {
                    return Err(ProfilerError::Internal(format!(
                        "the journal names {text:?} twice"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn apply(&self, batch: Batch, pending: &mut Pending) -> Result<()> {
        self.intern_all(&batch.names, &batch.shapes)?;
        {
            let mut collector = self.collector.lock();
            for (thread, event) in batch.events {
                collector
                    .kept
                    .ingest(pending.entry(thread).or_default(), thread, event);
            }
            for window in &batch.windows {
                collector.kept.torch_ops.add(window);
            }
        }
        if let Some((detector, devices)) = batch.devices {
            let mut store = self.samples.lock();
            store.detector = detector.map(leak);
            store.described_devices = devices;
        }
        for (host, devices) in batch.ticks {
            self.record_samples(host, &devices);
        }
        self.counters.set(batch.counters);
        self.latest.publish(None, None, batch.memory_source);
        self.set_identity(batch.role, batch.rank);
        Ok(())
    }
}

/// Builders of steps not ended yet, per thread.
pub(crate) type Pending = FxHashMap<u32, FxHashMap<u64, StepBuilder>>;

/// A detector name from a journal, for the `&'static str` the sample store keeps. Recovery
/// runs once per journal in a short-lived command, so the few bytes are never reclaimed.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SpanEvent, StepEvent, NO_ENGINE_STEP};
    use crate::names::NameId;

    fn span(name: u32, parent: u32, shapes: u32) -> Event {
        Event::Span(SpanEvent {
            seq: 1,
            name: NameId(name),
            parent: NameId(parent),
            depth: 0,
            memory_delta_mb: f32::NAN,
            shapes: NameId(shapes),
            step_seq: 1,
            start_ns: 0,
            duration_ns: 1,
        })
    }

    #[test]
    fn a_batch_naming_ids_no_table_holds_is_refused() {
        let s = Session::new(1, 1, Settings::default());
        s.interner().intern(b"model").unwrap();
        let batch = |events: Vec<Event>, names: Vec<String>| Batch {
            names,
            events: events.into_iter().map(|e| (1, e)).collect(),
            ..Batch::default()
        };
        let none = NameId::NONE.0;
        assert!(s.check(&batch(vec![span(0, none, none)], vec![])).is_ok());
        assert!(s
            .check(&batch(vec![span(1, 0, none)], vec!["new".into()]))
            .is_ok());
        for bad in [
            span(1, none, none),
            span(u32::MAX - 1, none, none),
            span(none, none, none),
            span(0, 7, none),
            span(0, none, 0),
        ] {
            assert!(s.check(&batch(vec![bad], vec![])).is_err(), "{bad:?}");
        }
        let step = Event::Step(StepEvent {
            seq: 1,
            engine_step: NO_ENGINE_STEP,
            batch_size: 1,
            num_tokens: 1,
            start_ns: u64::MAX,
            duration_ns: u64::MAX,
            memory_start_mb: f32::NAN,
            memory_end_mb: f32::NAN,
            utilization_start: f32::NAN,
            utilization_end: f32::NAN,
        });
        // Times and counts at their limits saturate instead of wrapping or panicking.
        let mut pending = Pending::default();
        s.apply(batch(vec![step, step], vec![]), &mut pending)
            .unwrap();
        let summary = s.summary(None).unwrap();
        assert_eq!(summary.total_steps, 2);
    }

    #[test]
    fn a_snapshot_whose_totals_do_not_hold_together_is_refused() {
        let s = Session::new(1, 1, Settings::default());
        let collector = s.collector.lock();
        let samples = s.samples.lock();
        let mut state = s.capture(&collector, &samples, &Settings::default());
        drop((collector, samples));
        assert!(state.check().is_ok());
        state.totals.total_steps = 1;
        state.totals.min_ns = 10;
        state.totals.max_ns = 1;
        assert!(state.check().is_err());
        state.totals.max_ns = 10;
        state.totals.layers = vec![LayerTotals::default(); 3];
        assert!(state.check().is_err(), "layer totals past the names");
        state.totals.layers.clear();
        state.trace_spans.push(TraceSpan {
            thread_id: 1,
            name: NameId(5),
            seq: 1,
            start_ns: 0,
            duration_ns: 1,
            gpu_ns: crate::event::NO_GPU_TIME,
        });
        assert!(state.check().is_err(), "a traced span of no name");
    }
}
