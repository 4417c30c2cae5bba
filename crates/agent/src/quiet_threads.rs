//! Every thread the agent starts blocks every asynchronous signal. A process-directed signal
//! goes to a thread that does not block it, so a thread of ours that took signals would take
//! them from the host: a SIGTERM the host blocks around a critical section would kill it there,
//! and a signal the host reads with `signalfd` or `sigwait` (which need it blocked in every
//! thread) would take its default action instead. With ours blocking them, the host's own
//! mask decides, as it would without us.
//!
//! The mask is set on the spawning thread for the moment of the spawn, so the new thread
//! starts with it and no signal can reach it before its first instruction. Faults (SIGSEGV,
//! SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) stay unblocked: they are sent to the thread that
//! caused them, and blocking them would hide a crash.
// The signal mask calls are libc's.
#![allow(unsafe_code)]

use std::io;
use std::thread::{Builder, JoinHandle};

use libc::c_int;

/// Sent to the faulting thread, never to the process: left as they are.
const SYNCHRONOUS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Spawns a thread of the agent with every asynchronous signal blocked.
pub(crate) fn spawn<F, T>(builder: Builder, body: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    with_signals_blocked(|| builder.spawn(body))
}

/// Runs `f` with every asynchronous signal blocked on the calling thread, so that every
/// thread it starts starts blocking them; the
/// calling thread's mask is what it was before when this returns.
fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigfillset/sigdelset fill a sigset_t we own; pthread_sigmask reads it and writes
    // the old mask into another we own. glibc keeps its own internal signals out of the set.
    let old = unsafe {
        let mut asynchronous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut asynchronous);
        for sig in SYNCHRONOUS {
            libc::sigdelset(&mut asynchronous, sig);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        (libc::pthread_sigmask(libc::SIG_BLOCK, &asynchronous, &mut old) == 0).then_some(old)
    };
    let result = f();
    if let Some(old) = old {
        // SAFETY: puts back the mask read above, on the same thread. A signal that came
        // meanwhile for this thread was held pending and is delivered now, as the host's.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked_now() -> Vec<c_int> {
        // SAFETY: reads the calling thread's mask into a sigset_t we own.
        let mask = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            mask
        };
        [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGCHLD,
            libc::SIGSEGV,
        ]
        .into_iter()
        // SAFETY: sigismember reads the set we own.
        .filter(|&sig| unsafe { libc::sigismember(&mask, sig) } == 1)
        .collect()
    }

    #[test]
    fn the_new_thread_blocks_asynchronous_signals_and_the_caller_keeps_its_mask() {
        let before = blocked_now();
        let inside = spawn(Builder::new(), blocked_now).unwrap().join().unwrap();
        assert_eq!(
            inside,
            vec![
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGUSR1,
                libc::SIGCHLD
            ]
        );
        assert_eq!(blocked_now(), before);
    }
}
