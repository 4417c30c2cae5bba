#![allow(unsafe_code)] // close(2) of inherited fds
//! The server's sockets, known by fd so that a forked child can close them: the child has no
//! server thread, and a listener or connection it kept would hold the port and leave clients
//! waiting on a socket nobody serves.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Sockets a server holds at most: its listener and [`super::MAX_CONNECTIONS`] connections,
/// for two servers (an old one draining while a new one starts).
const SLOTS: usize = 2 * (super::MAX_CONNECTIONS + 1);

static HELD: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// A socket's place in the registry; the slot is freed when this is dropped.
pub(super) struct Registered(Option<usize>);

/// Notes `fd` as one of the server's. With every slot taken (no more than two servers run at
/// once) it goes unnoted: a child would keep that one socket, nothing worse.
pub(super) fn register(fd: RawFd) -> Registered {
    let slot = HELD.iter().position(|held| {
        held.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    Registered(slot)
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            HELD[slot].store(-1, Ordering::Release);
        }
    }
}

/// In a forked child (one thread, this one): closes every socket the parent's servers held.
pub(crate) fn close_inherited() {
    for held in &HELD {
        let fd = held.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the fd is a socket of the parent's server, inherited; no thread of the
            // child uses it (the server thread does not exist here).
            unsafe { libc::close(fd) };
        }
    }
}
