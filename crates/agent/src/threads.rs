//! The agent's background threads, all detached and stopped when their `Running` is dropped
//! (nothing ever waits for them):
//! - the collector drains the thread rings; recording threads wake it with a lock-free unpark;
//! - the sampler takes host (and GPU) samples at the sample interval;
//! - the exporter, when an export interval is set, writes the reports periodically, apart from
//!   the collector so that draining never pauses while a large report is written;
//! - the metrics server, when a Prometheus address is set, answers scrapes (`metrics`);
//! - the kernel tracer, when kernels are traced, reads CUPTI's records (`kernels`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use vllm_profiler_core::Session;
use vllm_profiler_gpu::{DeviceBackend, SharedBackend};

use crate::config::Config;
use crate::quiet_threads;
use crate::sampling::Sampler;
use crate::warnings;

/// How often the collector drains when no thread asked it to.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// The threads of one session. Dropping it stops them.
pub(crate) struct Running {
    generation: u64,
    shape: Shape,
    collector_stop: Arc<AtomicBool>,
    collector: Option<Thread>,
    /// Dropping it disconnects the channel the sampler and exporter wait on.
    _stop: Sender<()>,
}

/// Which threads a configuration needs, and what the sampler detects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `None`: no sampler.
    sampler: Option<vllm_profiler_gpu::Options>,
    /// Where devices' samples are shared with the host's other processes; `None`: not shared.
    shared_dir: Option<PathBuf>,
    exporter: bool,
    /// Where the Prometheus endpoint serves.
    prometheus: Option<crate::metrics::Endpoint>,
    /// `None`: kernels are not traced.
    kernels: Option<vllm_profiler_cupti::Options>,
}

impl Shape {
    pub(crate) fn of(config: &Config) -> Shape {
        Shape {
            sampler: config
                .settings
                .gpu_monitoring
                .then(|| vllm_profiler_gpu::Options {
                    nvml_library: config.nvml_library.clone(),
                    amdsmi_library: config.amdsmi_library.clone(),
                    devices: config.devices.clone(),
                }),
            shared_dir: config.shared_sampler.then(|| {
                config
                    .runtime_dir
                    .clone()
                    .unwrap_or_else(vllm_profiler_gpu::shared::default_runtime_dir)
            }),
            exporter: config.settings.export_interval.is_some(),
            prometheus: config
                .prometheus_addr
                .clone()
                .map(|addr| crate::metrics::Endpoint {
                    addr,
                    runtime_dir: config
                        .runtime_dir
                        .clone()
                        .unwrap_or_else(vllm_profiler_gpu::shared::default_runtime_dir),
                    expiry: config.prometheus_expiry,
                }),
            kernels: config.kernels.then(|| vllm_profiler_cupti::Options {
                library: config.cupti_library.clone(),
                ..Default::default()
            }),
        }
    }
}

impl Running {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.collector_stop.store(true, Ordering::Release);
        if let Some(collector) = &self.collector {
            collector.unpark();
        }
    }
}

/// Starts the threads `config` needs.
pub(crate) fn start(session: &Arc<Session>, config: &Config) -> Running {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let shape = Shape::of(config);
    let collector_stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (session, stop) = (session.clone(), collector_stop.clone());
        spawn("vprof-collector", move || collect_loop(&session, &stop))
    };
    session.set_collector_thread(collector.clone());
    if let Some(options) = shape.sampler.clone() {
        let (session, stop) = (session.clone(), stop_rx.clone());
        let shared_dir = shape.shared_dir.clone();
        spawn("vprof-sampler", move || {
            // A bug in a vendor library's wrapper must not take more than the sampler down.
            let sampled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sample_loop(&session, &options, shared_dir.as_deref(), &stop)
            }));
            if sampled.is_err() {
                warnings::print_warnings(&["the GPU sampler stopped on an internal error; steps \
                     are still recorded"
                    .to_owned()]);
            }
        });
    }
    if let Some(endpoint) = &shape.prometheus {
        // A port in use is one line; the host and the other threads go on.
        if let Err(err) = crate::metrics::start(endpoint.clone(), session.clone(), stop_rx.clone())
        {
            warnings::print_warnings(&[err]);
        }
    }
    if let Some(options) = shape.kernels.clone() {
        let (session, stop) = (session.clone(), stop_rx.clone());
        spawn("vprof-kernels", move || {
            crate::kernels::trace(session, options, stop)
        });
    }
    if shape.exporter {
        let session = session.clone();
        spawn("vprof-exporter", move || export_loop(&session, &stop_rx));
    }
    Running {
        generation: session.generation(),
        shape,
        collector_stop,
        collector,
        _stop: stop_tx,
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Option<Thread> {
    match quiet_threads::spawn(thread::Builder::new().name(name.to_owned()), body) {
        // The join handle is dropped: the thread is detached.
        Ok(handle) => Some(handle.thread().clone()),
        Err(err) => {
            warnings::print_warnings(&[format!("could not start thread {name}: {err}")]);
            None
        }
    }
}

/// Drains the rings and appends what they held to the journal, every `DRAIN_PERIOD` at the
/// latest, so that a kill loses at most the events of the last period.
fn collect_loop(session: &Session, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        handle_turn(session, session.collect());
        thread::park_timeout(DRAIN_PERIOD);
    }
}

/// What a collector turn left: a compaction's snapshot is written on a thread of its own, so
/// that draining goes on meanwhile (where no thread can be had, the unrun job fails the
/// compaction, which is tried again later); failures and notes are one line each.
pub(crate) fn handle_turn(session: &Session, turn: vllm_profiler_core::Turn) {
    if let Some(job) = turn.job {
        spawn("vprof-snapshot", move || job.run());
    }
    if let Some(failure) = turn.failure {
        warnings::warn_output_dir(Some(&session.settings().output_dir), failure);
    }
    if let Some(note) = turn.note {
        warnings::print_warnings(&[note]);
    }
}

/// Waits until `deadline` or until the stop channel disconnects; false when stopped.
fn wait_until(stop: &Receiver<()>, deadline: Instant) -> bool {
    matches!(stop.recv_deadline(deadline), Err(RecvTimeoutError::Timeout))
}

/// Detects the GPUs here, on the sampler thread (loading NVML or amd-smi can take long and
/// must never happen in the constructor), then samples until stopped. With `shared_dir`, each
/// device is sampled by one process of the host (see `vllm_profiler_gpu::shared`).
fn sample_loop(
    session: &Session,
    options: &vllm_profiler_gpu::Options,
    shared_dir: Option<&Path>,
    stop: &Receiver<()>,
) {
    let detection = vllm_profiler_gpu::detect(options);
    warnings::print_warnings(&detection.warnings);
    let backend = match (detection.backend, shared_dir) {
        (Some(backend), Some(dir)) => {
            match SharedBackend::new(backend, dir, session.settings().sample_interval) {
                Ok(shared) => Some(Box::new(shared) as Box<dyn DeviceBackend>),
                Err((backend, why)) => {
                    warnings::print_warnings(&[format!(
                        "GPU samples are not shared with other processes ({why}); this process \
                     samples its devices itself"
                    )]);
                    Some(backend)
                }
            }
        }
        (backend, _) => backend,
    };
    let mut sampler = Sampler::new(backend);
    let mut next = Instant::now();
    loop {
        sampler.tick(session);
        let warnings = sampler.take_warnings();
        if !warnings.is_empty() {
            warnings::print_warnings(&warnings);
        }
        let interval = session.settings().sample_interval;
        next += interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow backend call): skip the missed ticks instead of bursting.
            next = now + interval;
        }
        if !wait_until(stop, next) {
            return;
        }
    }
}

fn export_loop(session: &Session, stop: &Receiver<()>) {
    loop {
        let settings = session.settings();
        let Some(interval) = settings.export_interval else {
            return;
        };
        if !wait_until(stop, Instant::now() + interval) {
            return;
        }
        if !session.has_recorded() {
            continue;
        }
        if let Err(err) = session.export(&settings.output_dir) {
            warnings::warn_output_dir(
                Some(&settings.output_dir),
                format!("periodic export failed: {err}"),
            );
        }
    }
}
