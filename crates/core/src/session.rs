//! One profiling session of one process: settings, the name table, the collector that drains
//! the thread rings into aggregates and bounded histories, and the sample store.
//!
//! `snapshot` saves and restores all of it for the crash-safe journal (`crate::journal`).

mod journaling;
mod kept;
mod snapshot;

pub use journaling::Turn;
use kept::{Aggregates, Feed, Kept, KeptLayer, KeptStep, LayerTotals, StepBuilder, FEED_LIMIT};
pub use snapshot::{recover, Recovered};

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::trace::{self, TraceSpan, TraceStep};
use parking_lot::{Mutex, MutexGuard, RwLock};
use ringbuf::traits::{Consumer, Observer, Split};
use ringbuf::{HeapCons, HeapRb};
use rustc_hash::FxHashMap;
use vllm_profiler_format::{self as format, unix_now};

use crate::error::{ProfilerError, Result};
use crate::export::write_json_atomic;
use crate::history::Bounded;
use crate::names::{Interner, NameId, SHAPES};
use crate::recorder::{Event, ThreadRecorder, RING_CAPACITY};

/// How long a report or summary waits for the collector before giving up, so that an exit can
/// never hang on a stuck lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How long an export waits for another one in progress (a large history takes seconds).
pub const EXPORT_WAIT: Duration = Duration::from_secs(10);

/// Serialises a sequence of step records as they are produced, without collecting them.
struct StreamedSteps<I> {
    records: RefCell<I>,
}

impl<I: Iterator<Item = format::StepRecord>> serde::Serialize for StreamedSteps<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&mut *self.records.borrow_mut())
    }
}

/// What a session is told by its configuration. Everything here can change while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub output_dir: PathBuf,
    pub sample_interval: Duration,
    /// `None`: export only on request and at exit.
    pub export_interval: Option<Duration>,
    /// Detailed steps and samples per device kept.
    pub max_history: usize,
    pub gpu_monitoring: bool,
    /// Keep the crash-safe journal in the output dir (`crate::journal`): what the collector
    /// drains is appended there, so that a killed process's reports can be recovered.
    pub journal: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            output_dir: PathBuf::from("./profiling_results"),
            sample_interval: Duration::from_millis(100),
            export_interval: None,
            max_history: 10_000,
            gpu_monitoring: true,
            journal: false,
        }
    }
}

/// Counters bumped on rare paths of the recording threads.
#[derive(Debug, Default)]
pub struct HotCounters {
    pub lost_events: AtomicU64,
    pub auto_closed_spans: AtomicU64,
    /// Steps never ended: open when their thread exited, or abandoned at the open-steps limit.
    pub unfinished_steps: AtomicU64,
    /// Spans never ended: open when their thread exited, or abandoned at the nesting limit.
    pub unfinished_spans: AtomicU64,
}

/// The newest sample's figures for the primary device, read by every step begin and end.
/// Stored as `f32` bits; NaN means unknown.
#[derive(Debug)]
pub struct LatestMetrics {
    utilization: AtomicU32,
    memory_mb: AtomicU32,
    source: AtomicU8,
}

impl Default for LatestMetrics {
    fn default() -> Self {
        LatestMetrics {
            utilization: AtomicU32::new(f32::NAN.to_bits()),
            memory_mb: AtomicU32::new(f32::NAN.to_bits()),
            source: AtomicU8::new(0),
        }
    }
}

impl LatestMetrics {
    /// (utilization %, memory MB); NaN where unknown.
    #[inline]
    pub fn read(&self) -> (f32, f32) {
        (
            f32::from_bits(self.utilization.load(Ordering::Relaxed)),
            f32::from_bits(self.memory_mb.load(Ordering::Relaxed)),
        )
    }

    pub fn publish(
        &self,
        utilization: Option<f64>,
        memory_mb: Option<f64>,
        source: format::MemorySource,
    ) {
        let bits = |v: Option<f64>| v.map_or(f32::NAN, |v| v as f32).to_bits();
        self.utilization.store(bits(utilization), Ordering::Relaxed);
        self.memory_mb.store(bits(memory_mb), Ordering::Relaxed);
        self.source.store(
            match source {
                format::MemorySource::None => 0,
                format::MemorySource::HostRss => 1,
                format::MemorySource::Gpu => 2,
                format::MemorySource::GpuProcess => 3,
            },
            Ordering::Relaxed,
        );
    }

    pub fn memory_source(&self) -> format::MemorySource {
        match self.source.load(Ordering::Relaxed) {
            1 => format::MemorySource::HostRss,
            2 => format::MemorySource::Gpu,
            3 => format::MemorySource::GpuProcess,
            _ => format::MemorySource::None,
        }
    }
}

/// A figure that came in as `f32` (memory deltas), summed or averaged in `f64`, given back
/// with `f32` precision: its shortest decimal, so that 64.2 reads 64.2 and not
/// 64.19999694824219.
fn f32_precision(v: f64) -> f64 {
    let single = v as f32;
    if !single.is_finite() {
        return v;
    }
    single.to_string().parse().unwrap_or(v)
}

/// The shapes table as an export sees it: each canonical text parsed once, when first needed.
struct ShapesTable {
    texts: Vec<Arc<str>>,
    parsed: Vec<std::cell::OnceCell<Option<format::SpanShapes>>>,
}

impl ShapesTable {
    fn new(texts: Vec<Arc<str>>) -> Self {
        let parsed = texts.iter().map(|_| std::cell::OnceCell::new()).collect();
        ShapesTable { texts, parsed }
    }

    fn get(&self, id: NameId) -> Option<&format::SpanShapes> {
        let i = id.0 as usize;
        let text = self.texts.get(i)?;
        self.parsed[i]
            .get_or_init(|| crate::shapes::parse(text))
            .as_ref()
    }
}

struct ThreadSource {
    consumer: HeapCons<Event>,
    thread_id: u32,
    pending: FxHashMap<u64, StepBuilder>,
}

struct Collector {
    sources: Vec<ThreadSource>,
    kept: Kept,
    /// What was drained since the journal last took it.
    feed: Feed,
}

struct SampleStore {
    /// `None` until the sampler's first tick.
    detector: Option<&'static str>,
    described_devices: Vec<format::GpuDevice>,
    host: Bounded<format::HostSample>,
    /// One history per sampled device, in the order the backend reports them.
    devices: Vec<(u32, Bounded<format::GpuSample>)>,
    /// What the journal has not written yet (kept only while it is open).
    feed: SampleFeed,
}

#[derive(Default)]
struct SampleFeed {
    active: bool,
    /// One entry per tick: the host sample and the devices' samples.
    ticks: Vec<(format::HostSample, Vec<format::GpuSample>)>,
    devices_changed: bool,
    overflowed: bool,
}

impl SampleStore {
    fn dropped(&self) -> u64 {
        self.devices
            .iter()
            .fold(self.host.dropped(), |sum, (_, h)| {
                sum.saturating_add(h.dropped())
            })
    }
}

/// What a metrics endpoint serves (see [`Session::metrics_snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub total_steps: u64,
    pub total_tokens: u64,
    /// Sum of every step's duration, seconds.
    pub step_seconds_sum: f64,
    /// Steps per bucket (not cumulative), one per bound asked for, then one above the last.
    pub step_buckets: Vec<u64>,
    pub dropped_steps: u64,
    pub dropped_samples: u64,
    pub lost_events: u64,
    pub devices: Vec<format::GpuDevice>,
    /// The newest sample of each sampled device.
    pub latest_samples: Vec<format::GpuSample>,
}

/// Everything one process records between its start (or fork) and its exit.
pub struct Session {
    pid: u32,
    generation: u64,
    started: Instant,
    started_unix: f64,
    settings: RwLock<Settings>,
    interner: Interner,
    /// Canonical span shapes, apart from the names so that they cannot use them up.
    shapes: Interner,
    counters: HotCounters,
    latest: LatestMetrics,
    collector: Mutex<Collector>,
    samples: Mutex<SampleStore>,
    /// Serialises exports so that files are replaced in order.
    export_lock: Mutex<()>,
    /// Exports written so far (under `export_lock`): the next one's stamp is one more.
    exports: AtomicU64,
    /// The collector thread, unparked by recording threads: lock-free, unlike a channel send.
    collector_thread: ArcSwapOption<std::thread::Thread>,
    /// Thread slots: the next never-used one, and those freed by exited threads.
    next_thread_slot: AtomicU32,
    free_thread_slots: Mutex<Vec<u32>>,
    /// Set by the final export at exit: later exports do nothing.
    closed: AtomicBool,
    /// What this process is in a vLLM server, and a worker's rank.
    identity: RwLock<(format::Role, Option<u32>)>,
    /// The crash-safe journal's files; taken only by the collector thread and the final export.
    journal: Mutex<crate::journal::Journal>,
    /// A session rebuilt from a journal: the name its process had (`None`: this process).
    recovered_name: Option<String>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn finite(v: f32) -> Option<f64> {
    (!v.is_nan()).then_some(f64::from(v))
}

impl Session {
    /// A new session for process `pid`; `generation` tells it apart from earlier sessions of
    /// the same address space (before a fork).
    pub fn new(pid: u32, generation: u64, settings: Settings) -> Arc<Session> {
        let max = settings.max_history;
        Arc::new(Session {
            pid,
            generation,
            started: Instant::now(),
            started_unix: unix_now(),
            settings: RwLock::new(settings),
            interner: Interner::default(),
            shapes: Interner::new(&SHAPES),
            counters: HotCounters::default(),
            latest: LatestMetrics::default(),
            collector: Mutex::new(Collector {
                sources: Vec::new(),
                kept: Kept::new(max),
                feed: Feed::default(),
            }),
            samples: Mutex::new(SampleStore {
                detector: None,
                described_devices: Vec::new(),
                host: Bounded::new(max),
                devices: Vec::new(),
                feed: SampleFeed::default(),
            }),
            export_lock: Mutex::new(()),
            exports: AtomicU64::new(0),
            collector_thread: ArcSwapOption::const_empty(),
            next_thread_slot: AtomicU32::new(1),
            free_thread_slots: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            identity: RwLock::new((format::Role::Process, None)),
            journal: Mutex::new(crate::journal::Journal::new(pid)),
            recovered_name: None,
        })
    }

    /// Sets what this process is (and a worker's rank), for every report from now on.
    pub fn set_identity(&self, role: format::Role, rank: Option<u32>) {
        *self.identity.write() = (role, rank);
    }

    pub fn identity(&self) -> (format::Role, Option<u32>) {
        *self.identity.read()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// The table of canonical span shapes (`crate::shapes`).
    pub fn shapes(&self) -> &Interner {
        &self.shapes
    }

    pub fn counters(&self) -> &HotCounters {
        &self.counters
    }

    pub fn latest(&self) -> &LatestMetrics {
        &self.latest
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().clone()
    }

    /// Replaces the settings; a smaller history drops (and counts) its oldest entries.
    pub fn set_settings(&self, settings: Settings) {
        let max = settings.max_history;
        *self.settings.write() = settings;
        {
            let mut collector = self.collector.lock();
            collector.kept.history.set_capacity(max);
            collector
                .kept
                .trace_spans
                .set_capacity(trace::span_capacity(max));
        }
        let mut samples = self.samples.lock();
        samples.host.set_capacity(max);
        for (_, h) in &mut samples.devices {
            h.set_capacity(max);
        }
    }

    /// Nanoseconds since the session started, from the monotonic clock.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn unix_at(&self, ns: u64) -> f64 {
        self.started_unix + ns as f64 / 1e9
    }

    /// Asks the collector thread to drain soon: an unpark, lock-free, never blocks.
    pub fn wake_collector(&self) {
        if let Some(thread) = &*self.collector_thread.load() {
            thread.unpark();
        }
    }

    /// Names the thread `wake_collector` unparks (it waits with `std::thread::park_timeout`).
    pub fn set_collector_thread(&self, thread: Option<std::thread::Thread>) {
        self.collector_thread.store(thread.map(Arc::new));
    }

    /// Creates the recorder of the calling thread: its ring, registered with the collector.
    pub fn register_thread(self: &Arc<Self>, thread_id: u32) -> ThreadRecorder {
        let (producer, consumer) = HeapRb::<Event>::new(RING_CAPACITY).split();
        let slot = self.take_thread_slot();
        // arc-swap gives each thread a node at its first load: take it now, not on the hot path.
        drop(self.collector_thread.load());
        self.collector.lock().sources.push(ThreadSource {
            consumer,
            thread_id,
            pending: FxHashMap::default(),
        });
        ThreadRecorder::new(self.clone(), producer, slot)
    }

    /// Whether a thread ever took a recorder of this session (called a recording function).
    pub fn has_recorded(&self) -> bool {
        self.next_thread_slot.load(Ordering::Relaxed) > 1
    }

    /// A slot no live thread of this session has: a freed one, or a new one. Slots tell the
    /// handles of threads apart; past 2^20 live threads they would repeat.
    fn take_thread_slot(&self) -> u32 {
        if let Some(slot) = self.free_thread_slots.lock().pop() {
            return slot;
        }
        let slot = self.next_thread_slot.fetch_add(1, Ordering::Relaxed) & 0xf_ffff;
        slot.max(1)
    }

    /// Called when a recording thread exits.
    pub(crate) fn release_thread_slot(&self, slot: u32) {
        self.free_thread_slots.lock().push(slot);
    }

    fn lock_collector(&self) -> Result<MutexGuard<'_, Collector>> {
        self.collector
            .try_lock_for(LOCK_WAIT)
            .ok_or_else(|| ProfilerError::Internal("the collector stayed busy for 2 s".into()))
    }

    /// Moves every finished event from the thread rings into the totals and the history.
    pub fn drain(&self) -> Result<()> {
        let mut collector = self.lock_collector()?;
        Self::drain_locked(&mut collector);
        Ok(())
    }

    fn drain_locked(collector: &mut Collector) {
        let Collector {
            sources,
            kept,
            feed,
        } = collector;
        for source in sources.iter_mut() {
            while let Some(event) = source.consumer.try_pop() {
                feed.push(source.thread_id, &event);
                kept.ingest(&mut source.pending, source.thread_id, event);
            }
        }
        // A thread that has exited and whose events are all in can be forgotten.
        sources.retain(|s| s.consumer.write_is_held() || !s.consumer.is_empty());
    }

    /// Records which detector answered and the devices it found, for the reports.
    pub fn describe_devices(&self, detector: &'static str, devices: Vec<format::GpuDevice>) {
        let mut store = self.samples.lock();
        store.detector = Some(detector);
        store.described_devices = devices;
        store.feed.devices_changed = store.feed.active;
    }

    /// Adds one tick of samples: the host, and every sampled device (one bounded history each).
    pub fn record_samples(&self, host: format::HostSample, devices: &[format::GpuSample]) {
        let max = self.settings.read().max_history;
        let mut store = self.samples.lock();
        let store = &mut *store;
        if store.feed.active {
            if store.feed.ticks.len() < FEED_LIMIT {
                store.feed.ticks.push((host.clone(), devices.to_vec()));
            } else {
                store.feed.ticks.clear();
                store.feed.overflowed = true;
            }
        }
        store.host.push(host);
        for sample in devices {
            let position = store
                .devices
                .iter()
                .position(|(id, _)| *id == sample.device_id);
            let history = match position {
                Some(i) => &mut store.devices[i].1,
                None => {
                    store.devices.push((sample.device_id, Bounded::new(max)));
                    &mut store.devices.last_mut().expect("just pushed").1
                }
            };
            history.push(sample.clone());
        }
    }

    /// The performance summary over every step ever recorded, or over the last `n` kept steps.
    pub fn summary(&self, last_n_steps: Option<u64>) -> Result<format::PerformanceSummary> {
        let mut collector = self.lock_collector()?;
        Self::drain_locked(&mut collector);
        Ok(self.summary_locked(&collector, last_n_steps))
    }

    fn summary_locked(
        &self,
        collector: &Collector,
        last_n_steps: Option<u64>,
    ) -> format::PerformanceSummary {
        let names = self.interner.snapshot();
        let detector = self.samples.lock().detector.map(str::to_owned);
        let window;
        let totals = match last_n_steps {
            None => &collector.kept.totals,
            Some(n) => {
                let mut agg = Aggregates::new();
                for kept in collector.kept.history.last(n as usize) {
                    agg.add_step(&kept.event);
                    for layer in kept.layers.iter() {
                        agg.add_layer(
                            layer.name,
                            u64::from(layer.calls),
                            layer.total_ns,
                            (u64::from(layer.memory_calls), layer.memory_delta_mb),
                        );
                    }
                }
                window = agg;
                &window
            }
        };
        let steps = totals.total_steps;
        let any = steps > 0;
        // hdrhistogram answers with the highest value of a bucket: keep it within [min, max].
        let quantile = |q: f64| {
            any.then(|| {
                let v = totals.histogram.value_at_quantile(q);
                ms(v.max(totals.min_ns).min(totals.max_ns))
            })
        };
        let window_ns = totals.last_end_ns.saturating_sub(totals.first_start_ns);
        let window_seconds = (any && window_ns > 0).then(|| window_ns as f64 / 1e9);
        let layer_performance = totals
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.calls > 0)
            .filter_map(|(i, l)| {
                let name = names.get(i)?;
                Some((
                    name.to_string(),
                    format::LayerPerformance {
                        avg_duration_ms: ms(l.total_ns) / l.calls as f64,
                        call_count: l.calls,
                        total_duration_ms: ms(l.total_ns),
                        avg_memory_delta_mb: (l.memory_calls > 0)
                            .then(|| f32_precision(l.memory_delta_mb / l.memory_calls as f64)),
                    },
                ))
            })
            .collect();
        let c = &self.counters;
        let (role, rank) = self.identity();
        format::PerformanceSummary {
            schema_version: format::SCHEMA_VERSION,
            pid: self.pid,
            role,
            rank,
            generated_at: unix_now(),
            export: None,
            last_n_steps,
            total_steps: steps,
            empty_steps: totals.empty_steps,
            avg_duration_ms: any.then(|| totals.total_ns as f64 / 1e6 / steps as f64),
            min_duration_ms: any.then(|| ms(totals.min_ns)),
            max_duration_ms: any.then(|| ms(totals.max_ns)),
            p50_duration_ms: quantile(0.50),
            p90_duration_ms: quantile(0.90),
            p99_duration_ms: quantile(0.99),
            total_tokens: totals.total_tokens,
            total_batch_size: totals.total_batch,
            tokens_per_second: window_seconds.map(|w| totals.total_tokens as f64 / w),
            window_seconds,
            avg_memory_mb: (totals.memory_count > 0)
                .then(|| totals.memory_sum / totals.memory_count as f64),
            max_memory_mb: (totals.memory_count > 0).then_some(totals.memory_max),
            memory_source: self.latest.memory_source(),
            detector,
            layer_performance,
            counters: format::Counters {
                kept_steps: collector.kept.history.len() as u64,
                dropped_steps: collector.kept.history.dropped(),
                dropped_samples: self.dropped_samples(),
                lost_events: c.lost_events.load(Ordering::Relaxed),
                auto_closed_spans: c.auto_closed_spans.load(Ordering::Relaxed),
                unfinished_steps: c.unfinished_steps.load(Ordering::Relaxed),
                unfinished_spans: c.unfinished_spans.load(Ordering::Relaxed),
                total_spans: totals.total_spans,
            },
        }
    }

    /// What a metrics endpoint serves, read at one scrape: totals over every step, the step
    /// durations counted into the buckets whose upper bounds (seconds, ascending) are given,
    /// and the newest sample of each device.
    pub fn metrics_snapshot(&self, bucket_bounds_s: &[f64]) -> Result<MetricsSnapshot> {
        let mut collector = self.lock_collector()?;
        Self::drain_locked(&mut collector);
        let totals = &collector.kept.totals;
        let mut step_buckets = Vec::with_capacity(bucket_bounds_s.len() + 1);
        let mut counted = 0;
        for &bound in bucket_bounds_s {
            // hdrhistogram keeps 3 significant digits: a step within 0.1 % of a bound may be
            // counted on either side of it.
            let at_most = if totals.total_steps == 0 {
                0
            } else {
                totals
                    .histogram
                    .count_between(0, (bound * 1e9) as u64)
                    .max(counted)
            };
            step_buckets.push(at_most - counted);
            counted = at_most;
        }
        step_buckets.push(totals.total_steps.saturating_sub(counted));
        let store = self.samples.lock();
        Ok(MetricsSnapshot {
            total_steps: totals.total_steps,
            total_tokens: totals.total_tokens,
            step_seconds_sum: totals.total_ns as f64 / 1e9,
            step_buckets,
            dropped_steps: collector.kept.history.dropped(),
            dropped_samples: store.dropped(),
            lost_events: self.counters.lost_events.load(Ordering::Relaxed),
            devices: store.described_devices.clone(),
            latest_samples: store
                .devices
                .iter()
                .filter_map(|(_, history)| history.iter().next_back().cloned())
                .collect(),
        })
    }

    fn dropped_samples(&self) -> u64 {
        self.samples.lock().dropped()
    }

    /// One kept step as its report record.
    fn step_record(
        &self,
        kept: &KeptStep,
        names: &[Arc<str>],
        shapes: &ShapesTable,
    ) -> format::StepRecord {
        let name_of = |id: NameId| names.get(id.0 as usize).map(|n| n.to_string());
        let e = &kept.event;
        format::StepRecord {
            step_id: kept.step_id,
            batch_size: e.batch_size,
            num_tokens: e.num_tokens,
            start_time: self.unix_at(e.start_ns),
            duration_ms: ms(e.duration_ns),
            memory_used_mb: finite(e.memory_end_mb),
            memory_start_mb: finite(e.memory_start_mb),
            thread_id: kept.thread_id,
            engine_step: (e.engine_step != crate::recorder::NO_ENGINE_STEP)
                .then_some(e.engine_step),
            layer_timings: kept
                .layers
                .iter()
                .filter_map(|l| {
                    let shapes = shapes.get(l.shapes);
                    Some((
                        name_of(l.name)?,
                        format::LayerTiming {
                            duration_ms: ms(l.total_ns),
                            call_count: l.calls,
                            parent: name_of(l.parent),
                            depth: l.depth,
                            memory_delta_mb: (l.memory_calls > 0)
                                .then(|| f32_precision(l.memory_delta_mb)),
                            input_shapes: shapes.and_then(|s| s.input_shapes.clone()),
                            output_shapes: shapes.and_then(|s| s.output_shapes.clone()),
                        },
                    ))
                })
                .collect(),
            gpu_metrics: format::StepGpuMetrics {
                start_utilization: finite(e.utilization_start),
                end_utilization: finite(e.utilization_end),
            },
        }
    }

    fn gpu_history(&self) -> Option<format::GpuHistory> {
        let store = self.samples.lock();
        if store.host.is_empty() && store.devices.iter().all(|(_, h)| h.is_empty()) {
            return None;
        }
        Some(self.history_locked(&store, None, f64::NEG_INFINITY))
    }

    /// The kept samples of `device` (all devices when `None`) taken at or after `since`
    /// (Unix seconds), oldest first, in the report's shape.
    pub fn gpu_samples(&self, device: Option<u32>, since: f64) -> format::GpuHistory {
        self.history_locked(&self.samples.lock(), device, since)
    }

    fn history_locked(
        &self,
        store: &SampleStore,
        device: Option<u32>,
        since: f64,
    ) -> format::GpuHistory {
        let sample_interval_s = self.settings.read().sample_interval.as_secs_f64();
        let mut gpu_history: Vec<format::GpuSample> = store
            .devices
            .iter()
            .filter(|(id, _)| device.is_none() || device == Some(*id))
            .flat_map(|(_, h)| h.iter().filter(|s| s.timestamp >= since).cloned())
            .collect();
        gpu_history.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        let (role, rank) = self.identity();
        format::GpuHistory {
            schema_version: format::SCHEMA_VERSION,
            pid: self.pid,
            role,
            rank,
            detector: store.detector.unwrap_or(format::CPU_DETECTOR).to_owned(),
            sample_interval_s,
            devices: store.described_devices.clone(),
            gpu_history,
            host_history: store
                .host
                .iter()
                .filter(|s| s.timestamp >= since)
                .cloned()
                .collect(),
            dropped_samples: store.dropped(),
            export: None,
        }
    }

    /// Writes the report files into `dir` (created if missing); returns the paths written.
    /// A session that recorded nothing and sampled nothing writes nothing, and so does a closed
    /// one.
    pub fn export(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>> {
        let _serial = self.lock_exports()?;
        if self.closed.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        self.export_locked(dir)
    }

    /// The final export: waits for one in progress, writes, and closes the session so that no
    /// periodic export replaces (or half-writes) the final files afterwards.
    /// The journal goes once the reports are written: they hold everything it had.
    pub fn close_and_export(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>> {
        let _serial = self.lock_exports()?;
        if self.closed.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        // The journal first gets what it lacks, so that a kill during the export (vLLM's
        // SIGKILL at shutdown, a SIGTERM) loses nothing: `recover` has it all. A compaction
        // this turn would start is left: the old pair stays whole.
        drop(self.collect());
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        let written = self.export_locked(dir)?;
        self.close_journal();
        Ok(written)
    }

    fn lock_exports(&self) -> Result<MutexGuard<'_, ()>> {
        self.export_lock
            .try_lock_for(EXPORT_WAIT)
            .ok_or_else(|| ProfilerError::Internal("another export stayed busy for 10 s".into()))
    }

    fn export_locked(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>> {
        crate::export::remove_dead_temporaries_now_and_then(dir);
        let stamp = format::ExportStamp {
            sequence: self.exports.fetch_add(1, Ordering::Relaxed) + 1,
            at: unix_now(),
        };
        // Under the lock: drain, the summary (cheap: totals) and a shallow copy of the history.
        let recorded = {
            let mut collector = self.lock_collector()?;
            Self::drain_locked(&mut collector);
            collector.kept.any().then(|| {
                (
                    format::PerformanceSummary {
                        export: Some(stamp),
                        ..self.summary_locked(&collector, None)
                    },
                    collector.kept.history.iter().cloned().collect::<Vec<_>>(),
                    collector.kept.history.dropped(),
                    collector
                        .kept
                        .trace_spans
                        .iter()
                        .copied()
                        .collect::<Vec<_>>(),
                    collector.kept.trace_spans.dropped(),
                )
            })
        };
        let history = self.gpu_history().map(|history| format::GpuHistory {
            export: Some(stamp),
            ..history
        });
        let mut written = Vec::new();
        if let Some((summary, kept, dropped_steps, spans, dropped_spans)) = recorded {
            written.push(write_json_atomic(
                dir,
                &format::summary_file_name(self.pid),
                &summary,
            )?);
            let names = self.interner.snapshot();
            let shapes = ShapesTable::new(self.shapes.snapshot());
            let (role, rank) = self.identity();
            let steps = format::DetailedSteps {
                schema_version: format::SCHEMA_VERSION,
                pid: self.pid,
                role,
                rank,
                memory_source: self.latest.memory_source(),
                dropped_steps,
                export: Some(stamp),
                // Streamed: one record is built and written at a time.
                detailed_steps: StreamedSteps {
                    records: RefCell::new(
                        kept.iter().map(|k| self.step_record(k, &names, &shapes)),
                    ),
                },
            };
            written.push(write_json_atomic(
                dir,
                &format::detailed_steps_file_name(self.pid),
                &steps,
            )?);
            let trace_steps: Vec<TraceStep> = kept
                .iter()
                .map(|k| TraceStep {
                    thread_id: k.thread_id,
                    step_id: k.step_id,
                    start_ns: k.event.start_ns,
                    duration_ns: k.event.duration_ns,
                    batch_size: k.event.batch_size,
                    num_tokens: k.event.num_tokens,
                })
                .collect();
            let (role, rank) = self.identity();
            let process = trace::TraceProcess {
                pid: self.pid,
                started_unix: self.started_unix,
                name: self
                    .recovered_name
                    .clone()
                    .unwrap_or_else(trace::TraceProcess::own_name),
                role,
                rank,
                live: self.recovered_name.is_none(),
            };
            let mut trace = trace::build(
                &process,
                &trace_steps,
                &spans,
                dropped_spans,
                &names,
                history.as_ref(),
            );
            trace.other_data.extend([
                (
                    format::ExportStamp::TRACE_SEQUENCE.to_owned(),
                    format::TraceArg::Count(stamp.sequence),
                ),
                (
                    format::ExportStamp::TRACE_AT.to_owned(),
                    format::TraceArg::Number(stamp.at),
                ),
            ]);
            written.push(write_json_atomic(
                dir,
                &format::trace_file_name(self.pid),
                &trace,
            )?);
        }
        if let Some(history) = history {
            written.push(write_json_atomic(
                dir,
                &format::gpu_history_file_name(self.pid),
                &history,
            )?);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_layers_stay_small() {
        // The history holds one per name per step: 10000 steps of 200 layers is 80 MB at 40.
        assert!(
            std::mem::size_of::<KeptLayer>() <= 40,
            "{}",
            std::mem::size_of::<KeptLayer>()
        );
    }

    #[test]
    fn f32_figures_read_as_their_shortest_decimal() {
        assert_eq!(f32_precision(f64::from(64.2_f32)), 64.2);
        assert_eq!(f32_precision(0.001953125), 0.001953125);
        assert_eq!(f32_precision(-3.75), -3.75);
        assert_eq!(f32_precision(1e300), 1e300, "beyond f32: unchanged");
    }
}
