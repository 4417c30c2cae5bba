//! SIGTERM with the default disposition. The agent installs a handler that only writes the
//! signal number to a pipe; the `vprof-signals` thread reads it, runs the work it was given
//! (the runtime's: a last journal turn, no export), restores SIG_DFL and raises SIGTERM again,
//! so the process dies by it as it would have. A handler the host installs later replaces
//! ours.
//!
//! In a Python process the handler goes in only once the interpreter is initialised. Python
//! reads every signal's disposition once, as it starts, and `signal.getsignal` answers from
//! that table: a handler found there that is not SIG_DFL or SIG_IGN reads as `None`, and code
//! that saves a handler and restores it later (uvicorn does) then fails. Installed after,
//! ours is invisible to Python, which sees SIG_DFL as it would without us.
// sigaction, pipes, raise and dlsym are libc's.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Write end of the pipe that the SIGTERM handler writes the signal number to; -1 when no
/// thread of this process reads it (a forked child until it records).
static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Read end, kept only to close it in a forked child.
static SIGNAL_PIPE_READ: AtomicI32 = AtomicI32::new(-1);
/// The process whose `vprof-signals` thread reads the pipe.
static SIGNAL_OWNER: AtomicU32 = AtomicU32::new(0);
/// A signal was handed to the thread already; a second one takes the default action at once.
static SIGNAL_PENDING: AtomicBool = AtomicBool::new(false);

/// The signals whose default disposition the agent takes over to save the journal's tail
/// first. Not SIGINT: Python installs its KeyboardInterrupt handler only where it finds SIGINT
/// at SIG_DFL, and KeyboardInterrupt runs the exit hook anyway.
const EXPORT_SIGNALS: [c_int; 1] = [libc::SIGTERM];

/// How often, and how long at most, the signal thread waits for Python to finish starting.
const PYTHON_POLL: Duration = Duration::from_millis(5);
const PYTHON_WAIT: Duration = Duration::from_secs(60);

/// Async-signal-safe: atomics, getpid, write, sigaction, raise.
extern "C" fn on_terminating_signal(sig: c_int) {
    // SAFETY: errno is the calling thread's; saved and restored around the calls below.
    let errno = unsafe { *libc::__errno_location() };
    let fd = SIGNAL_PIPE_WRITE.load(Ordering::Acquire);
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    let pid = unsafe { libc::getpid() } as u32;
    // Whatever happens next, the process is dying by the signal: no more warnings.
    crate::warnings::set_silent(true);
    let handed_over = fd >= 0
        && SIGNAL_OWNER.load(Ordering::Acquire) == pid
        && !SIGNAL_PENDING.swap(true, Ordering::AcqRel)
        && {
            let byte = sig as u8;
            // SAFETY: writes one byte from a live local to a pipe this process owns;
            // write is async-signal-safe.
            unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) == 1 }
        };
    if !handed_over {
        // Nobody exports here (or again): the default action, as if we were not there. The
        // signal is blocked while this handler runs, so it lands when the handler returns.
        default_action(sig);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Puts `sig` back to SIG_DFL and raises it on the calling thread.
fn default_action(sig: c_int) {
    // SAFETY: signal() with SIG_DFL and raise() are async-signal-safe and take no pointers.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Whether this process runs a Python interpreter, and if so whether it has started: asks
/// `Py_IsInitialized`, which reads one flag and may be called from any thread.
fn python_started() -> Option<bool> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"Py_IsInitialized".as_ptr()) };
    if symbol.is_null() {
        return None;
    }
    // SAFETY: the symbol is CPython's `int Py_IsInitialized(void)`.
    let initialized: extern "C" fn() -> c_int = unsafe { std::mem::transmute(symbol) };
    Some(initialized() != 0)
}

/// Takes over SIGTERM where it has the default disposition: at once, or in a Python process
/// that is still starting, from the `vprof-signals` thread once it has started. On SIGTERM the
/// thread calls `on_signal`, then lets the signal take its default action. Once per process (a forked child that records takes over again, with its own pipe
/// and thread).
pub(crate) fn take_over_sigterm(on_signal: fn()) {
    let pid = std::process::id();
    if SIGNAL_OWNER.load(Ordering::Acquire) == pid {
        return;
    }
    let mut fds = [-1 as c_int; 2];
    // SAFETY: pipe2 writes two fds into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [read_fd, write_fd] = fds;
    let later = python_started() == Some(false);
    let reader = crate::quiet_threads::spawn(
        std::thread::Builder::new().name("vprof-signals".to_owned()),
        move || {
            if later {
                let deadline = Instant::now() + PYTHON_WAIT;
                while python_started() == Some(false) && Instant::now() < deadline {
                    std::thread::sleep(PYTHON_POLL);
                }
                take_over();
            }
            signal_loop(read_fd, on_signal)
        },
    );
    if reader.is_err() {
        // SAFETY: both fds were just opened here and are used by nobody else.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return;
    }
    SIGNAL_PENDING.store(false, Ordering::Release);
    SIGNAL_PIPE_READ.store(read_fd, Ordering::Release);
    SIGNAL_PIPE_WRITE.store(write_fd, Ordering::Release);
    SIGNAL_OWNER.store(pid, Ordering::Release);
    if !later {
        take_over();
    }
}

/// Installs the handler for every export signal still at SIG_DFL (or ours, inherited through
/// fork); anything else is the host's and stays.
fn take_over() {
    let handler = on_terminating_signal as extern "C" fn(c_int) as libc::sighandler_t;
    for sig in EXPORT_SIGNALS {
        // SAFETY: sigaction reads and writes plain sigaction structs we own; the handler is an
        // extern "C" function that lives as long as the process (the library is not unloaded
        // while profiling) and is async-signal-safe.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != handler {
                continue;
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = handler;
            new.sa_flags = libc::SA_RESTART;
            libc::sigfillset(&mut new.sa_mask);
            libc::sigaction(sig, &new, std::ptr::null_mut());
        }
    }
}

/// The `vprof-signals` thread: waits for a signal number from the handler, runs `on_signal`,
/// then lets the signal take its default action.
fn signal_loop(read_fd: c_int, on_signal: fn()) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a live local from the pipe's read end.
        let n = unsafe { libc::read(read_fd, std::ptr::addr_of_mut!(byte).cast(), 1) };
        if n == 1 {
            let sig = c_int::from(byte);
            let _ = std::panic::catch_unwind(on_signal);
            // SAFETY: an empty set plus one valid signal; unblocks it on this thread only (our
            // threads block every asynchronous signal), so that raise() below delivers it here.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
            default_action(sig);
            // Not reached unless the host changed the disposition meanwhile: the host wins,
            // and the process lives on.
            SIGNAL_PENDING.store(false, Ordering::Release);
            crate::warnings::set_silent(false);
        } else if n == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return;
        }
    }
}

/// In a forked child: the parent's signal thread does not exist here, so the handler must not
/// hand signals to a pipe nobody reads (it takes the default action instead).
/// The child has one thread (this one), so closing the inherited fds races with nothing.
pub(crate) fn forget_parent_signal_pipe() {
    SIGNAL_OWNER.store(0, Ordering::Release);
    SIGNAL_PENDING.store(false, Ordering::Release);
    for end in [&SIGNAL_PIPE_WRITE, &SIGNAL_PIPE_READ] {
        let fd = end.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the fd was the parent's pipe, inherited; nothing here uses it any more
            // (the handler reads -1 from now on).
            unsafe { libc::close(fd) };
        }
    }
}
