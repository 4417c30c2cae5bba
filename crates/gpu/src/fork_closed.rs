//! Descriptors a forked child must close: a lock file whose `flock` the child would share
//! (and keep alive after its parent exits), a socket of a server thread that does not exist in
//! the child (a listener it kept would hold the port and leave clients waiting). A fixed table
//! of atomics, because the fork hook may take no lock and allocate nothing.
//!
//! Each descriptor is noted with its file's identity (device and inode), and the child closes
//! it only if the same number still names that file: another thread of the parent may close
//! a noted descriptor and open another under the same number while the kernel copies the
//! process, and the child must never close a file that is not ours.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Enough for 64 devices' lock files and two metrics servers (a listener and 16 connections
/// each); past it a descriptor goes unnoted, and a forked child keeps that one open.
const SLOTS: usize = 128;

static HELD: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
/// The device and inode of each slot's file; 0 while none (no file has inode 0).
static DEVICE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static INODE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

fn identity(fd: RawFd) -> Option<(u64, u64)> {
    let stat = nix::sys::stat::fstat(fd).ok()?;
    Some((stat.st_dev, stat.st_ino))
}

/// A descriptor noted for closing in a forked child, for as long as this lives. Drop it
/// before closing the descriptor, so that a child never closes a number reused since.
#[derive(Debug)]
pub struct CloseInChild(Option<usize>);

/// Notes `fd` (open) to be closed in a forked child.
pub fn close_in_child(fd: RawFd) -> CloseInChild {
    let Some((device, inode)) = identity(fd) else {
        return CloseInChild(None);
    };
    let slot = HELD.iter().position(|held| {
        held.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    if let Some(slot) = slot {
        DEVICE[slot].store(device, Ordering::Release);
        INODE[slot].store(inode, Ordering::Release);
    }
    CloseInChild(slot)
}

impl Drop for CloseInChild {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            INODE[slot].store(0, Ordering::Release);
            DEVICE[slot].store(0, Ordering::Release);
            HELD[slot].store(-1, Ordering::Release);
        }
    }
}

/// In a forked child (which has one thread, this one): closes every noted descriptor that
/// still names its file. Async-signal-safe: atomics, `fstat` and `close`.
pub fn close_inherited() {
    for (slot, held) in HELD.iter().enumerate() {
        let fd = held.swap(-1, Ordering::AcqRel);
        let noted = (
            DEVICE[slot].swap(0, Ordering::AcqRel),
            INODE[slot].swap(0, Ordering::AcqRel),
        );
        if fd >= 0 && noted.1 != 0 && identity(fd) == Some(noted) {
            let _ = nix::unistd::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_taken_while_noted_and_freed_after() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let noted = close_in_child(fd);
        let slot = noted.0.expect("a free slot");
        assert_eq!(HELD[slot].load(Ordering::Acquire), fd);
        assert_eq!(
            (
                DEVICE[slot].load(Ordering::Acquire),
                INODE[slot].load(Ordering::Acquire)
            ),
            identity(fd).unwrap()
        );
        drop(noted);
        assert_eq!(HELD[slot].load(Ordering::Acquire), -1);
        assert_eq!(INODE[slot].load(Ordering::Acquire), 0);
        // A descriptor that is not open is not noted.
        assert!(close_in_child(1_000_000).0.is_none());
    }
}
