//! The process-wide hooks: `atexit` and `pthread_atfork`, registered once, as `extern "C"`
//! trampolines that run what the runtime gave and catch every panic. They take the runtime's
//! functions as values, so that this module needs nothing of the runtime's.
#![allow(unsafe_code)]

use std::panic::catch_unwind;
use std::sync::OnceLock;

/// What the process hooks run.
pub(crate) struct ProcessHooks {
    /// At `exit` (the final export).
    pub at_exit: fn(),
    /// In the forking thread, before `fork`.
    pub before_fork: fn(),
    /// In the parent, after `fork`.
    pub after_fork_in_parent: fn(),
    /// In the child, after `fork`: it has one thread, this one.
    pub after_fork_in_child: fn(),
}

static HOOKS: OnceLock<ProcessHooks> = OnceLock::new();

fn run(pick: fn(&ProcessHooks) -> fn()) {
    if let Some(hooks) = HOOKS.get() {
        let _ = catch_unwind(pick(hooks));
    }
}

extern "C" fn at_exit() {
    run(|h| h.at_exit);
}

extern "C" fn before_fork() {
    run(|h| h.before_fork);
}

extern "C" fn after_fork_in_parent() {
    run(|h| h.after_fork_in_parent);
}

extern "C" fn after_fork_in_child() {
    run(|h| h.after_fork_in_child);
}

/// Registers `hooks` with libc; later calls change nothing (once per process: at load when
/// profiling is switched on, or at the first enable).
pub(crate) fn install(hooks: ProcessHooks) {
    if HOOKS.set(hooks).is_err() {
        return;
    }
    // SAFETY: registers extern "C" functions that catch every panic and live as long as the
    // process (the library is never unloaded while profiling).
    unsafe {
        libc::atexit(at_exit);
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        );
    }
}
