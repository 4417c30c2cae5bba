//! The tracer's life: it takes CUPTI's subscription, enables kernel, API and correlation
//! records, and reads what CUPTI returns on its own thread (`run`), until stopped. It steps
//! aside for another CUPTI client on demand (`pause`, `resume`: the torch profiler) and never
//! starts under Nsight.
// CUPTI's functions are C functions.
#![allow(unsafe_code)]

use core::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::buffers::{self, pool};
use crate::error::{CuptiError, Result};
use crate::layout::{self, kind};
use crate::library::{self, check, Api};
use crate::parse::Parser;
use crate::sink::Sink;

/// Set by an injected CUDA profiler (Nsight Systems, Nsight Compute): CUPTI is theirs.
pub const EXTERNAL_PROFILER_VARS: [&str; 2] =
    ["CUDA_INJECTION64_PATH", "NSYS_PROFILING_SESSION_ID"];

/// The kinds enabled: kernels without serialising them, the runtime and driver calls that
/// launch them (whose external correlation records carry our ids), and those records.
const KINDS: [u32; 4] = [
    kind::CONCURRENT_KERNEL,
    kind::RUNTIME,
    kind::DRIVER,
    kind::EXTERNAL_CORRELATION,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Tried before `library::DEFAULT_NAMES`.
    pub library: Option<PathBuf>,
    /// How often CUPTI is flushed, so that records reach the reports within this period.
    pub flush_period: Duration,
    /// How long to keep looking for a CUPTI that is not loaded yet (torch loads it late).
    pub load_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            library: None,
            flush_period: Duration::from_millis(100),
            load_timeout: Duration::from_secs(60),
        }
    }
}

static API: OnceLock<Api> = OnceLock::new();
/// Whether recording threads push their context: on while we hold the subscription.
static CORRELATING: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Control {
    /// `run` is going.
    running: bool,
    /// The subscription, by address, while held.
    subscriber: Option<usize>,
    /// Released for another client until `resume`.
    paused: bool,
    /// Our clock is CUPTI's: records need no mapping.
    monotonic: bool,
}

static CONTROL: Mutex<Control> = Mutex::new(Control {
    running: false,
    subscriber: None,
    paused: false,
    monotonic: false,
});

/// Whether recording threads should keep their context pushed (one relaxed load).
#[inline]
pub fn correlating() -> bool {
    CORRELATING.load(Ordering::Relaxed)
}

/// Pushes a recording thread's context for the launches it makes next.
#[inline]
pub fn push_context(context: u64) {
    if let Some(api) = API.get() {
        // SAFETY: a CUPTI function with plain arguments.
        unsafe { (api.push_external)(layout::EXTERNAL_KIND_CUSTOM2, context) };
    }
}

/// Pops what `push_context` pushed on this thread.
#[inline]
pub fn pop_context() {
    if let Some(api) = API.get() {
        let mut last = 0u64;
        // SAFETY: `last` is valid for writing.
        unsafe { (api.pop_external)(layout::EXTERNAL_KIND_CUSTOM2, &mut last) };
    }
}

/// Reads kernel records into `sink` until `stop` disconnects. Returns the reason it never
/// started or stopped early; records already read are in the sink.
pub fn run(options: &Options, sink: &dyn Sink, stop: &Receiver<()>) -> Result<()> {
    for var in EXTERNAL_PROFILER_VARS {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return Err(CuptiError::ExternalProfiler(var));
        }
    }
    let Some(api) = load(options, stop)? else {
        return Ok(());
    };
    // A tracer being stopped (the agent's threads restart with new settings) finishes first.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut control = CONTROL.lock();
        if !control.running {
            // Paused by the host (another client has CUPTI): `resume` starts it.
            if !control.paused {
                start(api, &mut control)?;
            }
            control.running = true;
            break;
        }
        drop(control);
        if Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut parser = Parser::default();
    let mut batch = Vec::new();
    map_clock(api, sink, &mut parser);
    let requests = flush_requests();
    let mut warned = Warned::default();
    let mut next_flush = Instant::now() + options.flush_period;
    loop {
        let mut asked = None;
        crossbeam_channel::select! {
            recv(stop) -> _ => break,
            recv(requests.1) -> ack => asked = ack.ok(),
            default(next_flush.saturating_duration_since(Instant::now())) => {}
        }
        next_flush = Instant::now() + options.flush_period;
        let held = CONTROL.lock().subscriber.is_some();
        if held {
            // SAFETY: a CUPTI function with a plain argument.
            let code = unsafe { (api.flush_all)(layout::FLUSH_FORCED) };
            warn_once(sink, &mut warned.flush, "cuptiActivityFlushAll", code);
            map_clock(api, sink, &mut parser);
        }
        drain(api, sink, &mut parser, &mut batch, &mut warned);
        if let Some(ack) = asked {
            let _ = ack.try_send(());
        }
    }
    let mut control = CONTROL.lock();
    stop_tracing(api, &mut control);
    control.running = false;
    drop(control);
    drain(api, sink, &mut parser, &mut batch, &mut warned);
    Ok(())
}

/// The failures of the periodic calls already told: each is told once per run.
#[derive(Default)]
struct Warned {
    flush: bool,
    dropped: bool,
}

fn warn_once(sink: &dyn Sink, warned: &mut bool, function: &'static str, code: u32) {
    if code != layout::SUCCESS && !*warned {
        *warned = true;
        sink.warn(format!(
            "{function} failed with code {code}: CUDA kernels may be missing from the reports"
        ));
    }
}

type FlushRequests = (Sender<Sender<()>>, Receiver<Sender<()>>);

fn flush_requests() -> &'static FlushRequests {
    static REQUESTS: OnceLock<FlushRequests> = OnceLock::new();
    REQUESTS.get_or_init(|| crossbeam_channel::bounded(4))
}

/// Has the tracer's thread hand every record CUPTI holds to the sink now, and waits for it up
/// to `timeout`: before a final export, so that the last step's kernels are in it. Returns at
/// once where the tracer does not run. False when it timed out (records may be left behind).
pub fn flush_now(timeout: Duration) -> bool {
    if !CONTROL.lock().running {
        return true;
    }
    let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
    if flush_requests().0.send_timeout(ack_tx, timeout).is_err() {
        return false;
    }
    ack_rx.recv_timeout(timeout).is_ok()
}

/// The library, looked for each second while `stop` allows, up to `load_timeout`. `None`:
/// stopped meanwhile.
fn load(options: &Options, stop: &Receiver<()>) -> Result<Option<&'static Api>> {
    if let Some(api) = API.get() {
        return Ok(Some(api));
    }
    let deadline = Instant::now() + options.load_timeout;
    let api = loop {
        match library::load(options.library.as_deref()) {
            Ok(api) => break api,
            Err(CuptiError::NotFound { tried }) if Instant::now() < deadline => {
                if !matches!(
                    stop.recv_timeout(Duration::from_secs(1)),
                    Err(RecvTimeoutError::Timeout)
                ) {
                    return Ok(None);
                }
                let _ = tried;
            }
            Err(err) => return Err(err),
        }
    };
    let mut version = 0u32;
    // SAFETY: `version` is valid for writing.
    check("cuptiGetVersion", unsafe {
        (api.get_version)(&mut version)
    })?;
    if !layout::version_is_known(version) {
        return Err(CuptiError::UnknownVersion(version));
    }
    Ok(Some(API.get_or_init(|| api)))
}

/// Takes the subscription and enables the records. On failure nothing stays enabled.
fn start(api: &Api, control: &mut Control) -> Result<()> {
    let mut subscriber: *mut c_void = std::ptr::null_mut();
    // SAFETY: `subscriber` is valid for writing; the callback ignores everything.
    let code = unsafe { (api.subscribe)(&mut subscriber, ignore_callback, std::ptr::null_mut()) };
    if code == layout::ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED {
        return Err(CuptiError::OtherSubscriber);
    }
    check("cuptiSubscribe", code)?;
    control.subscriber = Some(subscriber as usize);
    // SAFETY: the two callbacks have CUPTI's signatures and live for good.
    let registered = check("cuptiActivityRegisterCallbacks", unsafe {
        (api.register_callbacks)(buffers::buffer_requested, buffers::buffer_completed)
    });
    if let Err(err) = registered {
        stop_tracing(api, control);
        return Err(err);
    }
    control.monotonic = api.register_timestamp.is_some_and(|register| {
        // SAFETY: the callback has CUPTI's signature and lives for good.
        unsafe { register(monotonic_ns) == layout::SUCCESS }
    });
    for k in KINDS {
        // SAFETY: a CUPTI function with a plain argument.
        let code = unsafe { (api.enable)(k) };
        if code != layout::SUCCESS {
            stop_tracing(api, control);
            return Err(CuptiError::Call {
                function: "cuptiActivityEnable",
                code,
            });
        }
    }
    CORRELATING.store(true, Ordering::Release);
    Ok(())
}

/// Disables the records, flushes what CUPTI holds back to us and releases the subscription.
fn stop_tracing(api: &Api, control: &mut Control) {
    CORRELATING.store(false, Ordering::Release);
    for k in KINDS {
        // SAFETY: a CUPTI function with a plain argument.
        unsafe { (api.disable)(k) };
    }
    // SAFETY: as above; the buffers come back through `buffer_completed`.
    unsafe { (api.flush_all)(layout::FLUSH_FORCED) };
    if let Some(subscriber) = control.subscriber.take() {
        // SAFETY: the handle cuptiSubscribe gave.
        unsafe { (api.unsubscribe)(subscriber as *mut c_void) };
    }
}

/// Releases CUPTI for another client (the torch profiler) until `resume`; records held so
/// far are flushed to us first. A no-op where the tracer does not run.
pub fn pause() {
    let mut control = CONTROL.lock();
    control.paused = true;
    if let (Some(api), Some(_)) = (API.get(), control.subscriber) {
        stop_tracing(api, &mut control);
    }
}

/// Takes CUPTI back after `pause`.
pub fn resume() -> Result<()> {
    let mut control = CONTROL.lock();
    if !control.paused {
        return Ok(());
    }
    control.paused = false;
    let Some(api) = API.get() else {
        return Ok(());
    };
    if !control.running || control.subscriber.is_some() {
        // A tracer that starts later (or runs already) takes CUPTI itself.
        return Ok(());
    }
    let started = start(api, &mut control);
    // Still released: a later resume tries again.
    control.paused = started.is_err();
    started
}

/// Whether the tracer holds CUPTI now.
pub fn is_tracing() -> bool {
    CONTROL.lock().subscriber.is_some()
}

/// In a forked child: the parent's tracer does not exist here.
pub fn forget_in_child() {
    CORRELATING.store(false, Ordering::Relaxed);
    if CONTROL.is_locked() {
        // SAFETY: the child has one thread; the lock a parent thread held is nobody's here.
        unsafe { CONTROL.force_unlock() };
    }
    let mut control = CONTROL.lock();
    *control = Control::default();
}

/// Parses every buffer CUPTI returned, hands the kernels and the drop count to the sink.
fn drain(
    api: &Api,
    sink: &dyn Sink,
    parser: &mut Parser,
    batch: &mut Vec<crate::Kernel>,
    warned: &mut Warned,
) {
    while let Ok(filled) = pool().filled().try_recv() {
        // SAFETY: a buffer of the pool that CUPTI filled with `valid_size` bytes.
        unsafe {
            parser.parse(
                api.next_record,
                filled.buffer.0 as *mut u8,
                filled.valid_size,
                sink,
                batch,
            )
        };
        pool().give_back(filled.buffer);
        if !batch.is_empty() {
            sink.record(batch);
            batch.clear();
        }
    }
    let mut dropped = 0usize;
    // SAFETY: `dropped` is valid for writing; NULL context and stream 0 ask for all.
    let code = unsafe { (api.dropped_records)(std::ptr::null_mut(), 0, &mut dropped) };
    warn_once(
        sink,
        &mut warned.dropped,
        "cuptiActivityGetNumDroppedRecords",
        code,
    );
    if code == layout::SUCCESS && dropped > 0 {
        sink.dropped(dropped as u64);
    }
}

/// Sets the offset from the records' clock to the sink's.
fn map_clock(api: &Api, sink: &dyn Sink, parser: &mut Parser) {
    let monotonic = CONTROL.lock().monotonic;
    let before = sink.now_ns();
    let source = if monotonic {
        monotonic_now()
    } else {
        let mut ts = 0u64;
        // SAFETY: `ts` is valid for writing.
        if unsafe { (api.get_timestamp)(&mut ts) } != layout::SUCCESS {
            return;
        }
        ts
    };
    parser.offset_ns = i128::from(before) - i128::from(source);
}

/// The records' clock where CUPTI takes ours: CLOCK_MONOTONIC, the session clock's base.
unsafe extern "C" fn monotonic_ns() -> u64 {
    monotonic_now()
}

fn monotonic_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

unsafe extern "C" fn ignore_callback(
    _userdata: *mut c_void,
    _domain: u32,
    _cbid: u32,
    _cbdata: *const c_void,
) {
}
