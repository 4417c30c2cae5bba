//! One profiling session of one process: its identity, settings, name tables, clock, thread
//! slots and the locks around what it keeps. What it does is in the modules beside it: the
//! recorder (`crate::recorder`) writes into it, the collector (`crate::collector`) drains,
//! `crate::report` maps, `crate::export` writes, and `crate::journal_turn` journals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, MutexGuard, RwLock};
use vllm_profiler_format as format;

use crate::clock::Clock;
use crate::collector::Collector;
use crate::counters::HotCounters;
use crate::error::{ProfilerError, Result};
use crate::journal::Journal;
use crate::kernel_inbox::KernelInbox;
use crate::latest::LatestMetrics;
use crate::names::{Interner, SHAPES};
use crate::samples::SampleStore;
use crate::torch_ops::TorchOpInbox;

/// How long a report or summary waits for the collector before giving up, so that an exit can
/// never hang on a stuck lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

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

/// Everything one process records between its start (or fork) and its exit.
pub struct Session {
    pub(crate) pid: u32,
    pub(crate) generation: u64,
    /// Monotonic nanoseconds since the start, and the wall clock (injectable for tests).
    pub(crate) clock: Clock,
    pub(crate) started_unix: f64,
    pub(crate) settings: RwLock<Settings>,
    pub(crate) interner: Interner,
    /// Canonical span shapes, apart from the names so that they cannot use them up.
    pub(crate) shapes: Interner,
    pub(crate) counters: HotCounters,
    pub(crate) latest: LatestMetrics,
    pub(crate) collector: Mutex<Collector>,
    /// Kernel records from the kernel tracer, for the collector (shared with it).
    pub(crate) kernel_inbox: Arc<KernelInbox>,
    /// Torch profiler windows from the recorders, for the collector (shared with it).
    #[cfg_attr(not(feature = "recorder"), allow(dead_code))]
    pub(crate) torch_op_inbox: Arc<TorchOpInbox>,
    pub(crate) samples: Mutex<SampleStore>,
    /// Serialises exports so that files are replaced in order.
    pub(crate) export_lock: Mutex<()>,
    /// Exports written so far (under `export_lock`): the next one's stamp is one more.
    pub(crate) exports: AtomicU64,
    /// The collector thread, unparked by recording threads: lock-free, unlike a channel send.
    pub(crate) collector_thread: ArcSwapOption<std::thread::Thread>,
    /// Names the torch profiler's windows added to `interner` (bounded by the recorder).
    #[cfg_attr(not(feature = "recorder"), allow(dead_code))]
    pub(crate) torch_op_names: AtomicU32,
    /// Thread slots: the next never-used one, and those freed by exited threads.
    pub(crate) next_thread_slot: AtomicU32,
    #[cfg(feature = "recorder")]
    pub(crate) free_thread_slots: Mutex<Vec<u32>>,
    /// Set by the final export at exit: later exports do nothing.
    pub(crate) closed: AtomicBool,
    /// What this process is in a vLLM server, and a worker's rank.
    pub(crate) identity: RwLock<(format::Role, Option<u32>)>,
    /// The server run this process belongs to, and the pid of the process that started it.
    pub(crate) run: RwLock<RunIdentity>,
    /// The crash-safe journal's files; taken only by the collector thread and the final export.
    pub(crate) journal: Mutex<Journal>,
    /// A session rebuilt from a journal: the name its process had (`None`: this process).
    pub(crate) recovered_name: Option<String>,
}

/// Which run a session's process belongs to; `None`s for a session that was never told.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunIdentity {
    pub run_id: Option<String>,
    pub parent_pid: Option<u32>,
}

impl Session {
    /// A new session for process `pid`; `generation` tells it apart from earlier sessions of
    /// the same address space (before a fork).
    pub fn new(pid: u32, generation: u64, settings: Settings) -> Arc<Session> {
        Self::with_clock(pid, generation, settings, Clock::system())
    }

    /// A new session whose times come from `clock` (a [`crate::clock::ManualClock`] in tests).
    pub fn with_clock(pid: u32, generation: u64, settings: Settings, clock: Clock) -> Arc<Session> {
        let max = settings.max_history;
        let kernel_inbox = Arc::new(KernelInbox::default());
        let torch_op_inbox = Arc::new(TorchOpInbox::default());
        Arc::new(Session {
            pid,
            generation,
            started_unix: clock.unix_now(),
            clock,
            settings: RwLock::new(settings),
            interner: Interner::default(),
            shapes: Interner::new(&SHAPES),
            counters: HotCounters::default(),
            latest: LatestMetrics::default(),
            collector: Mutex::new(Collector::new(
                max,
                kernel_inbox.clone(),
                torch_op_inbox.clone(),
            )),
            kernel_inbox,
            torch_op_inbox,
            samples: Mutex::new(SampleStore::new(max)),
            export_lock: Mutex::new(()),
            exports: AtomicU64::new(0),
            collector_thread: ArcSwapOption::const_empty(),
            torch_op_names: AtomicU32::new(0),
            next_thread_slot: AtomicU32::new(1),
            #[cfg(feature = "recorder")]
            free_thread_slots: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            identity: RwLock::new((format::Role::Process, None)),
            run: RwLock::new(RunIdentity::default()),
            journal: Mutex::new(Journal::new(pid)),
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

    /// Sets the server run this process belongs to and its parent's pid, for every report.
    pub fn set_run(&self, run_id: String, parent_pid: u32) {
        *self.run.write() = RunIdentity {
            run_id: Some(run_id),
            parent_pid: Some(parent_pid),
        };
    }

    pub fn run(&self) -> RunIdentity {
        self.run.read().clone()
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
                .set_capacity(crate::trace::span_capacity(max));
            (collector.kept.torch_ops.trace).set_capacity(crate::trace::span_capacity(max));
        }
        self.samples.lock().set_capacity(max);
    }

    /// Nanoseconds since the session started, from the monotonic clock.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    pub(crate) fn unix_at(&self, ns: u64) -> f64 {
        self.started_unix + ns as f64 / 1e9
    }

    /// Hands kernel records to the collector; those past `kernel_inbox::INBOX_LIMIT` are
    /// counted as lost.
    pub fn record_kernels(&self, launches: &[crate::kernel_inbox::KernelLaunch]) {
        let lost = self.kernel_inbox.push(launches);
        if lost > 0 {
            (self.counters.lost_kernel_records).fetch_add(lost as u64, Ordering::Relaxed);
        }
        self.wake_collector();
    }

    /// Hands a torch profiler window to the collector; one past `torch_ops::INBOX_WINDOWS`
    /// waiting is counted as lost.
    #[cfg(feature = "recorder")]
    pub(crate) fn record_torch_op_window(&self, window: crate::torch_ops::Window) {
        if !self.torch_op_inbox.push(window) {
            (self.counters.lost_torch_op_windows).fetch_add(1, Ordering::Relaxed);
        }
        self.wake_collector();
    }

    /// Counts kernel records the library dropped (it had no buffer for them).
    pub fn count_dropped_kernel_records(&self, dropped: u64) {
        (self.counters.dropped_kernel_records).fetch_add(dropped, Ordering::Relaxed);
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

    /// Whether a thread ever took a recorder of this session (called a recording function).
    pub fn has_recorded(&self) -> bool {
        self.next_thread_slot.load(Ordering::Relaxed) > 1
    }

    pub(crate) fn lock_collector(&self) -> Result<MutexGuard<'_, Collector>> {
        self.collector
            .try_lock_for(LOCK_WAIT)
            .ok_or_else(|| ProfilerError::Internal("the collector stayed busy for 2 s".into()))
    }

    /// Moves every finished event from the thread rings into the totals and the history.
    pub fn drain(&self) -> Result<()> {
        self.lock_collector()?.drain();
        Ok(())
    }

    /// Records which detector answered and the devices it found, for the reports.
    pub fn describe_devices(&self, detector: &'static str, devices: Vec<format::GpuDevice>) {
        self.samples.lock().describe(detector, devices);
    }

    /// Adds one tick of samples: the host, and every sampled device (one bounded history each).
    pub fn record_samples(&self, host: format::HostSample, devices: &[format::GpuSample]) {
        let max = self.settings.read().max_history;
        self.samples.lock().record(host, devices, max);
    }
}
