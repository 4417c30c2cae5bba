//! Descriptors a forked child must close: a lock file whose `flock` the child would share
//! (and keep alive after its parent exits), a socket of a server thread that does not exist in
//! the child (a listener it kept would hold the port and leave clients waiting). A fixed table
//! of atomics, because the fork hook may take no lock and allocate nothing.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Enough for 64 devices' lock files and two metrics servers (a listener and 16 connections
/// each); past it a descriptor goes unnoted, and a forked child keeps that one open.
const SLOTS: usize = 128;

static HELD: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// A descriptor noted for closing in a forked child, for as long as this lives. Drop it
/// before closing the descriptor, so that a child never closes a number reused since.
#[derive(Debug)]
pub struct CloseInChild(Option<usize>);

/// Notes `fd` (open) to be closed in a forked child.
pub fn close_in_child(fd: RawFd) -> CloseInChild {
    let slot = HELD.iter().position(|held| {
        held.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    CloseInChild(slot)
}

impl Drop for CloseInChild {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            HELD[slot].store(-1, Ordering::Release);
        }
    }
}

/// In a forked child (which has one thread, this one): closes every noted descriptor.
/// Async-signal-safe: atomics and `close`.
pub fn close_inherited() {
    for held in &HELD {
        let fd = held.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            let _ = nix::unistd::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_taken_while_noted_and_freed_after() {
        let noted = close_in_child(1_000_000);
        let slot = noted.0.expect("a free slot");
        assert_eq!(HELD[slot].load(Ordering::Acquire), 1_000_000);
        drop(noted);
        assert_eq!(HELD[slot].load(Ordering::Acquire), -1);
    }
}
