//! The session's side of the crash-safe journal (`crate::journal`): what a snapshot and a batch
//! hold, the collector's writes, and the rebuilding of a session from a journal.
//!
//! A snapshot is everything an export reads, taken under the collector's lock, so that the
//! batches after it hold exactly the events drained after it. Rebuilt, the session folds the
//! batches' events in through the same `Kept::ingest` as the live collector, so its reports are
//! the ones the process would have written at that moment.

use serde::{Deserialize, Serialize};

use super::*;
use crate::journal::{self, Writer, JOURNAL_VERSION};

/// `HotCounters` as the journal holds them: lost events, auto-closed spans, unfinished steps,
/// unfinished spans.
type CounterValues = [u64; 4];

/// The whole session at one moment.
#[derive(Serialize, Deserialize)]
struct State {
    version: u32,
    /// The journal generation this snapshot starts; its log carries the same.
    generation: u64,
    writer: Writer,
    started_unix: f64,
    process_name: String,
    max_history: u64,
    sample_interval_s: f64,
    role: format::Role,
    rank: Option<u32>,
    names: Vec<String>,
    shapes: Vec<String>,
    counters: CounterValues,
    memory_source: format::MemorySource,
    totals: Totals,
    history: Vec<KeptStep>,
    history_dropped: u64,
    trace_spans: Vec<TraceSpan>,
    trace_dropped: u64,
    next_step_id: u64,
    /// Builders of steps whose end was not drained yet: (thread, step sequence, layers).
    pending: Vec<(u32, u64, Vec<KeptLayer>)>,
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
}

/// What one collector drain adds after the snapshot or the batch before it.
#[derive(Default, Serialize, Deserialize)]
struct Batch {
    /// Names and shapes interned since the previous batch, in id order.
    names: Vec<String>,
    shapes: Vec<String>,
    events: Vec<(u32, Event)>,
    /// One entry per sampler tick: the host and the devices.
    ticks: Vec<(format::HostSample, Vec<format::GpuSample>)>,
    /// The detector and devices, when they were described since.
    devices: Option<(Option<String>, Vec<format::GpuDevice>)>,
    counters: CounterValues,
    memory_source: format::MemorySource,
    role: format::Role,
    rank: Option<u32>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.ticks.is_empty() && self.devices.is_none()
    }
}

enum JournalWrite {
    Nothing,
    Snapshot(Box<State>),
    Batch(Batch),
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
        }
    }
}

impl HotCounters {
    fn values(&self) -> CounterValues {
        [
            self.lost_events.load(Ordering::Relaxed),
            self.auto_closed_spans.load(Ordering::Relaxed),
            self.unfinished_steps.load(Ordering::Relaxed),
            self.unfinished_spans.load(Ordering::Relaxed),
        ]
    }

    fn set(&self, values: CounterValues) {
        self.lost_events.store(values[0], Ordering::Relaxed);
        self.auto_closed_spans.store(values[1], Ordering::Relaxed);
        self.unfinished_steps.store(values[2], Ordering::Relaxed);
        self.unfinished_spans.store(values[3], Ordering::Relaxed);
    }
}

fn strings(table: Vec<Arc<str>>) -> Vec<String> {
    table.iter().map(|s| s.to_string()).collect()
}

impl Session {
    /// The collector's turn: drains the thread rings and, with the journal on, appends what
    /// they held to it (a snapshot first, when the journal is not open yet, has grown past its
    /// limit, or missed events). A process that never recorded anything writes no journal.
    /// The error is a failed write, said once per distinct message by the caller; the journal
    /// tries again a few seconds later, starting with a snapshot.
    pub fn collect(&self) -> std::result::Result<(), String> {
        let settings = self.settings();
        if !settings.journal || self.closed.load(Ordering::Acquire) {
            let _ = self.drain();
            return Ok(());
        }
        // Lock order: journal, collector, samples. Nothing takes the journal while holding
        // the others.
        let mut journal = self.journal.lock();
        let write = {
            // A collector busy for seconds is not the journal's failure: try at the next turn.
            let Ok(mut collector) = self.lock_collector() else {
                return Ok(());
            };
            Self::drain_locked(&mut collector);
            if journal.is_closed() || !collector.kept.any() {
                return Ok(());
            }
            if !journal.may_write() {
                // Waiting after a failure: hold nothing meanwhile, the next write is a
                // snapshot.
                collector.feed = Feed::default();
                self.samples.lock().feed = SampleFeed::default();
                return Ok(());
            }
            let mut samples = self.samples.lock();
            if journal.needs_snapshot(&settings.output_dir)
                || collector.feed.overflowed
                || samples.feed.overflowed
            {
                let mut state = self.capture(&collector, &samples, &settings);
                state.generation = journal.next_generation();
                journal.names_written = state.names.len();
                journal.shapes_written = state.shapes.len();
                collector.feed = Feed {
                    active: true,
                    ..Feed::default()
                };
                samples.feed = SampleFeed {
                    active: true,
                    ..SampleFeed::default()
                };
                JournalWrite::Snapshot(Box::new(state))
            } else {
                let (role, rank) = self.identity();
                let batch = Batch {
                    names: strings(self.interner.since(journal.names_written)),
                    shapes: strings(self.shapes.since(journal.shapes_written)),
                    events: std::mem::take(&mut collector.feed.events),
                    ticks: std::mem::take(&mut samples.feed.ticks),
                    devices: std::mem::take(&mut samples.feed.devices_changed).then(|| {
                        (
                            samples.detector.map(str::to_owned),
                            samples.described_devices.clone(),
                        )
                    }),
                    counters: self.counters.values(),
                    memory_source: self.latest.memory_source(),
                    role,
                    rank,
                };
                journal.names_written += batch.names.len();
                journal.shapes_written += batch.shapes.len();
                if batch.is_empty() && batch.names.is_empty() {
                    JournalWrite::Nothing
                } else {
                    JournalWrite::Batch(batch)
                }
            }
        };
        // The files are written with the collector free again.
        let written = match write {
            JournalWrite::Nothing => Ok(()),
            JournalWrite::Snapshot(state) => journal.write_snapshot(&settings.output_dir, |out| {
                postcard::to_io(&*state, out)
                    .map(|_| ())
                    .map_err(std::io::Error::other)
            }),
            JournalWrite::Batch(batch) => match postcard::to_stdvec(&batch) {
                Ok(bytes) => journal.append(&bytes),
                Err(err) => Err(std::io::Error::other(err)),
            },
        };
        written.map_err(|err| format!("the crash-safe journal could not be written: {err}"))
    }

    /// Removes the journal: reports just written hold everything it had. Recording again
    /// starts a new one (with a snapshot of everything so far).
    pub fn retire_journal(&self) {
        let mut journal = self.journal.lock();
        journal.retire();
        self.collector.lock().feed = Feed::default();
        self.samples.lock().feed = SampleFeed::default();
    }

    /// Removes the journal for good (the final export).
    pub(super) fn close_journal(&self) {
        self.journal.lock().close();
    }

    fn capture(&self, collector: &Collector, samples: &SampleStore, settings: &Settings) -> State {
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
                .sources
                .iter()
                .flat_map(|source| {
                    source
                        .pending
                        .iter()
                        .map(|(seq, b)| (source.thread_id, *seq, b.layers.clone()))
                })
                .collect(),
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
    fn restore(pid: u32, state: State) -> Result<(Arc<Session>, Pending)> {
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
        let mut pending: Pending = FxHashMap::default();
        for (thread, seq, layers) in state.pending {
            let index = layers
                .iter()
                .enumerate()
                .map(|(i, l)| (l.name, i))
                .collect();
            pending
                .entry(thread)
                .or_default()
                .insert(seq, StepBuilder { layers, index });
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

    fn apply(&self, batch: Batch, pending: &mut Pending) -> Result<()> {
        self.intern_all(&batch.names, &batch.shapes)?;
        {
            let mut collector = self.collector.lock();
            for (thread, event) in batch.events {
                collector
                    .kept
                    .ingest(pending.entry(thread).or_default(), thread, event);
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
type Pending = FxHashMap<u32, FxHashMap<u64, StepBuilder>>;

/// A detector name from a journal, for the `&'static str` the sample store keeps. Recovery
/// runs once per journal in a short-lived command, so the few bytes are never reclaimed.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// A session rebuilt from the journal of a process that ended without its final export.
pub struct Recovered {
    pub session: Arc<Session>,
    /// The process that wrote the journal.
    pub writer: Writer,
    /// Batches of the log folded in after the snapshot.
    pub batches: usize,
    /// Why the log was not read to its end, if it was not (a torn last frame after a kill).
    pub stopped: Option<String>,
}

/// Rebuilds the session of process `pid` from its journal in `dir`. Export it with
/// `close_and_export` to write the reports it would have written.
pub fn recover(dir: &std::path::Path, pid: u32) -> Result<Recovered> {
    let invalid = |what: String| ProfilerError::Internal(what);
    let bytes = journal::read_snapshot(dir, pid)?;
    let state: State = postcard::from_bytes(&bytes).map_err(|err| {
        invalid(format!(
            "{}: not a journal snapshot of this version ({err})",
            dir.join(journal::snapshot_file_name(pid)).display()
        ))
    })?;
    if state.version != JOURNAL_VERSION || state.writer.pid != pid {
        return Err(invalid(format!(
            "{}: a snapshot of version {} by pid {}, not version {JOURNAL_VERSION} by pid {pid}",
            dir.join(journal::snapshot_file_name(pid)).display(),
            state.version,
            state.writer.pid
        )));
    }
    let writer = state.writer.clone();
    let generation = state.generation;
    let (session, mut pending) = Session::restore(pid, state)?;
    let log = match journal::read_log(dir, pid) {
        Ok(log) => Some(log),
        // A kill between the snapshot and its log: the snapshot alone is whole.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err.into()),
    };
    let mut batches = 0;
    let mut stopped = None;
    if let Some(log) = log {
        // An older log (a kill between the two renames of a compaction) is in the snapshot.
        if log.header.version == JOURNAL_VERSION
            && log.header.writer == writer
            && log.header.generation == generation
        {
            stopped = log.stopped;
            for bytes in log.batches {
                match postcard::from_bytes::<Batch>(&bytes) {
                    Ok(batch) => session.apply(batch, &mut pending)?,
                    Err(err) => {
                        stopped = Some(format!("a batch that does not decode ({err})"));
                        break;
                    }
                }
                batches += 1;
            }
        }
    }
    Ok(Recovered {
        session,
        writer,
        batches,
        stopped,
    })
}
