//! The agent's process-wide state and its lifecycle: load, enable, record, export, disable,
//! fork and exit.
//!
//! The hot path reads one atomic word, `GATE`, and then touches only its own thread's recorder.
//! Everything else (sessions, threads, configuration) changes under `CONTROL`, off the hot path.
//!
//! Fork: a forked child owns none of its parent's threads, and any lock of the parent's session
//! may have been held by one of them. So the child never touches the parent's session: the fork
//! hook leaves the gate "armed", and the child's first call builds a new session under its own
//! pid. The parent's session is leaked, never dropped, in the child.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use vllm_profiler_core::{ProfilerError, Result, Session, ThreadRecorder};
use vllm_profiler_format::Role;

use crate::config::{self, Config};
use crate::gate::{Gate, GateState};
use crate::identity;
use crate::output_dir;
use crate::threads;
use crate::warnings;

static GATE: Gate = Gate::new();
static SESSION: ArcSwapOption<Session> = ArcSwapOption::const_empty();

/// What changes only off the hot path.
pub(crate) struct Control {
    /// The configuration a first call or a forked child starts with.
    config: Option<Config>,
    /// Warnings not printed yet; printed once, when the process is actually profiled.
    warnings: Vec<String>,
    /// The environment's warnings were queued once; later parses do not repeat them.
    env_warned: bool,
    threads: Option<threads::Running>,
}

/// A spin lock that yields, on purpose: it has no queue of waiters, so the lock the fork hooks
/// hold across fork() is released in the child by a plain store, even if parent threads were
/// waiting (a parking lock could hand it to a thread that does not exist in the child), and
/// without any thread-local (a fork may come from a thread-local destructor). It is taken only
/// off the hot path, briefly.
pub(crate) static CONTROL: ControlLock = ControlLock::new(Control {
    config: None,
    warnings: Vec::new(),
    env_warned: false,
    threads: None,
});

/// Between the gate going off in `disable` or `finish` and the end of their export: the
/// journal is still this process's crash-safe store, and SIGTERM still saves its tail.
static FINISHING: AtomicBool = AtomicBool::new(false);

/// Whether the exit and fork hooks are registered. A flag, not a `Once`: a fork that caught
/// a `Once` mid-run would leave the child waiting on it forever.
static HOOKS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether a thread of this process has called a recording function. A process that never
/// did (multiprocessing's resource tracker or forkserver, an API front end) writes no reports
/// of its own, periodic or final; an explicit `vllm_profiler_export` still writes them.
static RECORDED: AtomicBool = AtomicBool::new(false);

/// `vllm_profiler_set_role`: what this process is, for every report from now on. A rank is
/// kept for workers only.
pub fn set_role(role: Role, rank: Option<u32>) {
    let rank = if role == Role::Worker { rank } else { None };
    identity::store(role, rank);
    if let Ok(session) = own_session() {
        session.set_identity(role, rank);
    }
}

/// See `RECORDED`.
pub(crate) fn recorded() -> bool {
    RECORDED.load(Ordering::Acquire)
}

/// Registers the exit and fork hooks, once per process, before CONTROL is first taken: a fork
/// must never copy CONTROL locked into a child that has no hook to release it.
fn install_hooks() {
    if !HOOKS_INSTALLED.swap(true, Ordering::AcqRel) {
        crate::process_hooks::install(crate::process_hooks::ProcessHooks {
            at_exit: on_exit,
            before_fork,
            after_fork_in_parent,
            after_fork_in_child,
        });
    }
}

/// Holds CONTROL across `fork` so that the child never copies it mid-change; both sides
/// release it right after. The guard is leaked: no thread-local is needed, so this works even
/// for a fork from a thread-local destructor.
fn before_fork() {
    std::mem::forget(CONTROL.lock());
}

#[allow(unsafe_code)]
fn after_fork_in_parent() {
    // SAFETY: before_fork locked CONTROL on this thread and leaked the guard; nothing else can
    // hold it now, and the guard will never be used.
    unsafe { CONTROL.force_unlock() };
}

pub(crate) type ControlLock = spin::mutex::SpinMutex<Control, spin::relax::Yield>;

thread_local! {
    static RECORDER: RefCell<Option<ThreadRecorder>> = const { RefCell::new(None) };
}

fn control() -> spin::mutex::SpinMutexGuard<'static, Control, spin::relax::Yield> {
    CONTROL.lock()
}

impl Control {
    /// The environment's configuration; its warnings are queued the first time only.
    fn env_config(&mut self) -> Config {
        let (config, warnings) = output_dir::env_config();
        if !self.env_warned {
            self.env_warned = true;
            self.warnings.extend(warnings);
        }
        config
    }
}

/// Called by the library constructor: reads the environment and decides. Starts the agent's
/// threads (without waiting for them) only in a process that matches the process filter.
pub fn on_load() {
    output_dir::note_load_cwd();
    let Some(raw) = std::env::var_os(config::ENABLE_PROFILING) else {
        return;
    };
    let switch = raw.to_str().and_then(config::parse_bool);
    if switch == Some(false) || (switch.is_none() && raw.is_empty()) {
        return;
    }
    let (config, mut warnings) = output_dir::env_config();
    let matches = current_exe_name().is_some_and(|name| config.matches_process(&name));
    if matches {
        crate::run::adopt_at_load(&mut warnings);
    }
    if switch.is_none() {
        // Malformed master switch: say so only where the process would have been profiled.
        if matches {
            warnings.push(format!(
                "{}={} is not a boolean (1/true/yes/on or 0/false/no/off); using off",
                config::ENABLE_PROFILING,
                config::shown(&raw)
            ));
            warnings::print_warnings(&warnings);
        }
        return;
    }
    install_hooks();
    let mut control = control();
    control.config = Some(config.clone());
    control.warnings = warnings;
    control.env_warned = true;
    GATE.store(GateState::ARMED, Ordering::Release);
    if matches {
        let outcome = activate(&mut control, config);
        drop(control);
        if let Err(err) = report(outcome) {
            warnings::print_warnings(&[format!("could not start: {err}")]);
        }
    }
}

/// Prints the warnings an activation left (after `CONTROL` is released: stderr may block).
fn report(outcome: Result<Vec<String>>) -> Result<()> {
    match outcome {
        Ok(warnings) => {
            warnings::print_warnings(&warnings);
            Ok(())
        }
        Err(err) => Err(err),
    }
}

fn current_exe_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.file_name()?.to_str()?.to_owned())
}

/// Makes recording possible in this process with `config`: a session of this pid, its
/// threads, the exit and fork hooks. Idempotent; a running session takes the new settings.
/// Returns the warnings still to print.
fn activate(control: &mut Control, mut config: Config) -> Result<Vec<String>> {
    output_dir::resolve(&mut config.settings.output_dir);
    let pid = std::process::id();
    let gate = GATE.load(Ordering::Acquire);
    let current = SESSION.load_full();
    let session = match current {
        Some(session) if session.pid() == pid => {
            session.set_settings(config.settings.clone());
            session
        }
        inherited => {
            let session = Session::new(pid, gate.generation() + 1, config.settings.clone());
            let (role, rank) = identity::get();
            session.set_identity(role, rank);
            session.set_run(crate::run::id(), nix::unistd::getppid().as_raw() as u32);
            let parent = SESSION.swap(Some(session.clone()));
            // A forked child: the parent's session may hold locks of threads that do not exist
            // here. Never drop it.
            std::mem::forget(parent);
            std::mem::forget(inherited);
            session
        }
    };
    let keep_threads = control.threads.as_ref().is_some_and(|running| {
        running.generation() == session.generation()
            && *running.shape() == threads::Shape::of(&config)
    });
    if !keep_threads {
        match control.threads.take() {
            Some(running) if running.generation() == session.generation() => drop(running),
            // Threads of a parent process (after fork) do not exist here; their handles must
            // not be dropped either, for the same reason as the session.
            stale => std::mem::forget(stale),
        }
        control.threads = Some(threads::start(&session, &config));
    }
    crate::signals::take_over_sigterm(on_terminate);
    crate::torch_ops::publish(&config);
    control.config = Some(config);
    GATE.store(GateState::enabled(session.generation()), Ordering::Release);
    Ok(std::mem::take(&mut control.warnings))
}

/// The slow path of a call made while the gate is armed but not enabled.
fn activate_armed() -> Result<()> {
    let mut control = control();
    let gate = GATE.load(Ordering::Acquire);
    if gate.is_enabled() {
        return Ok(());
    }
    if !gate.is_armed() {
        return Err(ProfilerError::NotEnabled);
    }
    let config = match control.config.clone() {
        Some(config) => config,
        None => control.env_config(),
    };
    let outcome = activate(&mut control, config);
    drop(control);
    report(outcome)
}

/// `vllm_profiler_enable`: `None` takes the environment; a JSON object overrides it.
pub fn enable(config_json: Option<&str>) -> Result<()> {
    install_hooks();
    let mut control = control();
    let gate = GATE.load(Ordering::Acquire);
    let mut config = match (&control.config, gate.is_enabled()) {
        (Some(current), true) => current.clone(),
        _ => control.env_config(),
    };
    if let Some(json) = config_json {
        config.apply_json(json)?;
    } else if gate.is_enabled() {
        return Ok(());
    }
    let outcome = activate(&mut control, config);
    drop(control);
    report(outcome)
}

/// `vllm_profiler_disable`: stops recording and the threads, then writes the final reports.
pub fn disable() -> Result<Vec<PathBuf>> {
    let mut control = control();
    let gate = GATE.load(Ordering::Acquire);
    if !gate.is_enabled() {
        return Err(ProfilerError::NotEnabled);
    }
    FINISHING.store(true, Ordering::Release);
    GATE.store(gate.stopped(), Ordering::Release);
    crate::kernels::flush(crate::kernels::FINAL_FLUSH, true);
    drop(control.threads.take());
    drop(control);
    let exported = own_session().and_then(|session| {
        // The journal gets what it lacks before the export: a kill during it loses nothing.
        drop(session.collect());
        let written = session.export(&session.settings().output_dir)?;
        // The reports hold everything now; recording again starts a new journal.
        session.retire_journal();
        Ok(written)
    });
    FINISHING.store(false, Ordering::Release);
    exported
}

pub fn is_enabled() -> bool {
    GATE.load(Ordering::Relaxed).is_enabled()
}

/// The session of this process, if it was ever active. Reading (a summary, an export) does
/// not start an armed process.
fn own_session() -> Result<Arc<Session>> {
    match SESSION.load_full() {
        Some(session) if session.pid() == std::process::id() => Ok(session),
        _ => Err(ProfilerError::NotEnabled),
    }
}

/// `vllm_profiler_export`: writes the reports now, into `dir` or the configured dir.
pub fn export(dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let session = own_session()?;
    match dir {
        Some(dir) => {
            let mut dir = dir.to_path_buf();
            output_dir::resolve(&mut dir);
            session.export(&dir)
        }
        None => session.export(&session.settings().output_dir),
    }
}

/// `vllm_profiler_flush`: the collector's turn, now, on the calling thread. Nothing when
/// recording is off: a disabled session's journal was retired with its final reports.
pub fn flush() -> Result<()> {
    if !is_enabled() {
        return Ok(());
    }
    let Ok(session) = own_session() else {
        return Ok(());
    };
    crate::kernels::flush(crate::kernels::FLUSH, false);
    let mut turn = session.collect();
    let failure = turn.failure.take();
    threads::handle_turn(&session, turn);
    match failure {
        Some(failure) => Err(ProfilerError::Io(failure)),
        None => Ok(()),
    }
}

/// `vllm_profiler_summary_json`: the summary as JSON bytes.
pub fn summary_json(last_n_steps: Option<u64>) -> Result<Vec<u8>> {
    let summary = own_session()?.summary(last_n_steps)?;
    serde_json::to_vec(&summary).map_err(|e| ProfilerError::Internal(e.to_string()))
}

/// `vllm_profiler_gpu_history_json`: the kept samples of one device (or all) since a time.
pub fn gpu_history_json(device: Option<u32>, since: f64) -> Result<Vec<u8>> {
    let history = own_session()?.gpu_samples(device, since);
    serde_json::to_vec(&history).map_err(|e| ProfilerError::Internal(e.to_string()))
}

/// `vllm_profiler_gpus_json`: seed 001's GPU list, detected now with the environment's
/// library paths and devices. Needs no session.
pub fn gpus_json() -> Result<Vec<u8>> {
    let (config, _) = Config::from_env();
    let mut detection = vllm_profiler_gpu::detect(&vllm_profiler_gpu::Options {
        nvml_library: config.nvml_library,
        amdsmi_library: config.amdsmi_library,
        devices: config.devices,
    });
    let list =
        vllm_profiler_gpu::gpu_list(&mut detection, &mut vllm_profiler_gpu::CpuProbe::default());
    serde_json::to_vec(&list).map_err(|e| ProfilerError::Internal(e.to_string()))
}

/// Whether recording is off and stays off for this call (neither on nor armed): the recording
/// calls then return at once, without touching thread-local state.
#[inline]
pub fn recording_off() -> bool {
    GATE.load(Ordering::Acquire).is_off()
}

/// Runs `f` on the calling thread's recorder: one atomic load, then thread-local state.
#[inline]
pub fn with_recorder<T>(f: impl FnOnce(&mut ThreadRecorder) -> Result<T>) -> Result<T> {
    let gate = GATE.load(Ordering::Acquire);
    if !gate.is_enabled() {
        if !gate.is_armed() {
            return Err(ProfilerError::NotEnabled);
        }
        activate_armed()?;
        return with_recorder(f);
    }
    let generation = gate.generation();
    RECORDER
        .try_with(|cell| {
            let mut slot = cell
                .try_borrow_mut()
                .map_err(|_| ProfilerError::Internal("re-entrant call on one thread".into()))?;
            match slot.as_mut() {
                Some(recorder) if recorder.session().generation() == generation => {
                    let result = f(recorder);
                    crate::kernels::follow(recorder);
                    result
                }
                _ => {
                    let recorder = register_thread(generation)?;
                    // A recorder of another generation belongs to a parent process's session.
                    std::mem::forget(slot.replace(recorder));
                    let recorder = slot.as_mut().expect("just set");
                    let result = f(recorder);
                    crate::kernels::follow(recorder);
                    result
                }
            }
        })
        .unwrap_or(Err(ProfilerError::ThreadExiting))
}

fn register_thread(generation: u64) -> Result<ThreadRecorder> {
    let session = SESSION.load_full().ok_or(ProfilerError::NotEnabled)?;
    if session.generation() != generation {
        return Err(ProfilerError::NotEnabled);
    }
    let thread_id = nix::unistd::gettid().as_raw() as u32;
    RECORDED.store(true, Ordering::Release);
    Ok(session.register_thread(thread_id))
}

/// SIGTERM's work where its disposition is the default: the process is about to die by the
/// signal, so it writes only what the crash-safe journal lacks (one collector turn: the rings'
/// last events, or a first snapshot) and no report. It never waits for an export in progress
/// (it takes no export lock; during the final export, whose journal turn came first, it adds
/// nothing) and prints nothing; `vllm-profiler recover` writes the reports
/// from the journal, as after a SIGKILL. Recording stays on: should the host change the
/// disposition meanwhile and live on, its exit hook exports as usual.
pub fn on_terminate() {
    if !(is_enabled() || FINISHING.load(Ordering::Acquire)) || !recorded() {
        return;
    }
    if let Ok(session) = own_session() {
        // `flush` without its lines and its compaction thread: the old pair stays whole.
        drop(session.collect());
    }
}

/// Exit hook: see [`finish`]; a failure is one stderr line.
pub fn on_exit() {
    if let Err(err) = finish() {
        let dir = own_session().ok().map(|s| s.settings().output_dir);
        warnings::warn_output_dir(dir.as_deref(), format!("final export failed: {err}"));
    }
}

/// What the exit hook does, for hosts that leave without exit hooks (`_exit`, Python's
/// multiprocessing children): stops the threads and, if this process recorded, writes the
/// final reports. The session is closed after it, so late calls are no-ops and no periodic
/// export replaces the final files. `Ok(true)` when reports were written.
pub fn finish() -> Result<bool> {
    let gate = GATE.load(Ordering::Acquire);
    if !gate.is_enabled() {
        return Ok(false);
    }
    FINISHING.store(true, Ordering::Release);
    GATE.store(gate.stopped(), Ordering::Release);
    let Some(session) = SESSION.load_full() else {
        return Ok(false);
    };
    if session.pid() != std::process::id() {
        return Ok(false);
    }
    crate::kernels::flush(crate::kernels::FINAL_FLUSH, true);
    // Stop the threads if nobody else holds CONTROL; never wait for it at exit.
    if let Some(mut control) = CONTROL.try_lock() {
        drop(control.threads.take());
    }
    if !recorded() {
        return Ok(false);
    }
    session.close_and_export(&session.settings().output_dir)?;
    Ok(true)
}

/// Fork hook, in the child: CONTROL is released, and whatever was on becomes armed, so the
/// child starts its own session if (and only if) it records.
#[allow(unsafe_code)]
fn after_fork_in_child() {
    // SAFETY: the forking thread (this one, the only thread of the child) locked CONTROL in
    // before_fork and leaked the guard. A spin lock has no waiter queue, so the plain unlock
    // leaves it free here.
    unsafe { CONTROL.force_unlock() };
    crate::signals::forget_parent_signal_pipe();
    vllm_profiler_cupti::tracer::forget_in_child();
    RECORDED.store(false, Ordering::Relaxed);
    identity::forget_in_child();
    // The devices' lock files and the metrics server's sockets.
    vllm_profiler_gpu::fork_closed::close_inherited();
    // A lock the child held would make its parent's journal look alive after the parent died.
    vllm_profiler_core::journal::forget_inherited_lock();
    let gate = GATE.load(Ordering::Relaxed);
    if !gate.is_off() {
        GATE.store(gate.rearmed(), Ordering::Relaxed);
    }
}
