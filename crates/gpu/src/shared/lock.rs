//! A device's lock file and its states: held (this process samples the device), waiting
//! (another does), taking over from a stale holder, or unshared; and how a tick moves it
//! between them (see the `shared` module comment).

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Takes `file`'s lock without blocking; `Err((file, None))` when another holds it.
fn try_lock(file: File) -> Result<Flock<File>, (File, Option<Errno>)> {
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(file, errno)| match errno {
        Errno::EWOULDBLOCK | Errno::EINTR => (file, None),
        errno => (file, Some(errno)),
    })
}

/// Whether process `pid` exists: a sample left by a sampler that has exited is not taken (its
/// successor has the lock and is about to replace it).
pub(super) fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// A device's lock file, held or not.
pub(super) enum Lock {
    /// This process samples the device.
    Held(Flock<File>),
    /// Another process samples it; the file is kept open to try again cheaply.
    Waiting(File),
    /// This process samples it without the lock: the holder's samples went stale. It tries
    /// the lock on each tick.
    Taking(File),
    /// Not shared: no UUID, or the lock file could not be used. Sampled here.
    Unshared,
}

/// What a tick saw of the device's newest shared sample: it decides the lock's next state.
pub(super) struct Seen {
    /// A live process of another pid writes with a newer (generation, pid): writers yield.
    pub newer_elsewhere: bool,
    /// A live process of another pid writes fresh samples: the lock is not tried, so that a
    /// lock let go by a yielding holder goes to that taker rather than round the waiting
    /// processes.
    pub served: bool,
    /// The newest sample is older than the staleness bound: a waiting process takes over.
    pub stale: bool,
}

/// How a tick changed the lock, where the device's generation depends on it.
pub(super) enum Change {
    /// Nothing the generation depends on.
    Kept,
    /// A waiting process got the lock: the successor of a holder that is gone, whose
    /// generation goes on.
    Took,
    /// A waiting process takes over from a stale holder without the lock: a newer generation.
    TookOver,
    /// The lock cannot be used (the device is then sampled unshared).
    Failed(Errno),
}

impl Lock {
    pub(super) fn raw_fd(&self) -> Option<i32> {
        match self {
            Lock::Held(file) => Some(file.as_raw_fd()),
            Lock::Waiting(file) | Lock::Taking(file) => Some(file.as_raw_fd()),
            Lock::Unshared => None,
        }
    }

    /// Whether another process samples the device.
    pub(super) fn is_waiting(&self) -> bool {
        matches!(self, Lock::Waiting(_))
    }

    /// The lock's state after a tick that saw `seen`.
    pub(super) fn on_tick(self, seen: &Seen) -> (Lock, Change) {
        match self {
            Lock::Unshared => (Lock::Unshared, Change::Kept),
            Lock::Held(held) if seen.newer_elsewhere => match held.unlock() {
                Ok(file) => (Lock::Waiting(file), Change::Kept),
                Err((held, _)) => (Lock::Held(held), Change::Kept),
            },
            Lock::Held(held) => (Lock::Held(held), Change::Kept),
            Lock::Taking(file) if seen.newer_elsewhere => (Lock::Waiting(file), Change::Kept),
            Lock::Taking(file) => match try_lock(file) {
                Ok(held) => (Lock::Held(held), Change::Kept),
                Err((file, None)) => (Lock::Taking(file), Change::Kept),
                Err((file, Some(errno))) => (Lock::Waiting(file), Change::Failed(errno)),
            },
            Lock::Waiting(file) if seen.served => (Lock::Waiting(file), Change::Kept),
            Lock::Waiting(file) => match try_lock(file) {
                Ok(held) => (Lock::Held(held), Change::Took),
                Err((file, None)) if seen.stale => (Lock::Taking(file), Change::TookOver),
                Err((file, None)) => (Lock::Waiting(file), Change::Kept),
                Err((file, Some(errno))) => (Lock::Waiting(file), Change::Failed(errno)),
            },
        }
    }

    /// The lock of a writer that yields to a newer one: let go, and waiting.
    pub(super) fn yielded(self) -> Lock {
        match self {
            Lock::Held(held) => match held.unlock() {
                Ok(file) => Lock::Waiting(file),
                Err((held, _)) => Lock::Held(held),
            },
            Lock::Taking(file) => Lock::Waiting(file),
            other => other,
        }
    }
}
