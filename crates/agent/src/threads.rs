//! The agent's two background threads: the collector (drains the thread rings, periodic export)
//! and the sampler (host and GPU metrics at the sample interval). Both are detached and stop
//! when their `Running` is dropped; nothing ever waits for them.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use vllm_profiler_core::{Sampler, Session, Settings};

use crate::ffi;

/// How often the collector drains when no thread asked it to.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// The threads of one session. Dropping it stops them (their stop channel disconnects).
pub(crate) struct Running {
    generation: u64,
    gpu_monitoring: bool,
    _stop: Sender<()>,
}

impl Running {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn gpu_monitoring(&self) -> bool {
        self.gpu_monitoring
    }
}

/// Starts the collector, and the sampler when monitoring is on.
pub(crate) fn start(session: &Arc<Session>, settings: &Settings) -> Running {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    {
        let session = session.clone();
        let stop = stop_rx.clone();
        spawn("vllm-prof-collect", move || collect_loop(&session, &stop));
    }
    if settings.gpu_monitoring {
        let session = session.clone();
        spawn("vllm-prof-sample", move || sample_loop(&session, &stop_rx));
    }
    Running {
        generation: session.generation(),
        gpu_monitoring: settings.gpu_monitoring,
        _stop: stop_tx,
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) {
    if let Err(err) = thread::Builder::new().name(name.to_owned()).spawn(body) {
        ffi::print_warnings(&[format!("could not start thread {name}: {err}")]);
    }
}

fn collect_loop(session: &Session, stop: &Receiver<()>) {
    let mut next_export: Option<Instant> = None;
    let mut export_failed = false;
    loop {
        let settings = session.settings();
        let now = Instant::now();
        next_export = match (settings.export_interval, next_export) {
            (None, _) => None,
            (Some(interval), None) => Some(now + interval),
            (Some(_), due) => due,
        };
        let timeout = next_export.map_or(DRAIN_PERIOD, |due| {
            DRAIN_PERIOD.min(due.saturating_duration_since(now))
        });
        select! {
            recv(stop) -> _ => return,
            recv(session.collector_wakeups()) -> _ => {}
            default(timeout) => {}
        }
        let _ = session.drain();
        if let (Some(due), Some(interval)) = (next_export, settings.export_interval) {
            if Instant::now() >= due {
                match session.export(&settings.output_dir) {
                    Ok(_) => export_failed = false,
                    Err(err) if !export_failed => {
                        export_failed = true;
                        ffi::print_warnings(&[format!("periodic export failed: {err}")]);
                    }
                    Err(_) => {}
                }
                next_export = Some(Instant::now() + interval);
            }
        }
    }
}

fn sample_loop(session: &Session, stop: &Receiver<()>) {
    let mut sampler = Sampler::new(None);
    let mut next = Instant::now();
    loop {
        sampler.tick(session);
        let interval = session.settings().sample_interval;
        next += interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow backend call): skip the missed ticks instead of bursting.
            next = now + interval;
        }
        match stop.recv_deadline(next) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}
