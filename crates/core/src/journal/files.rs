//! The journal's files: their names, how they are opened, the writer's lock, and framing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{create_output_dir, write_atomic_with};

use super::writer::Writer;

pub fn lock_file_name(pid: u32) -> String {
    format!("journal_{pid}.lock")
}

pub fn snapshot_file_name(pid: u32) -> String {
    format!("journal_{pid}.snapshot")
}

pub fn log_file_name(pid: u32) -> String {
    format!("journal_{pid}.log")
}

pub fn next_log_file_name(pid: u32) -> String {
    format!("journal_{pid}.log.next")
}

/// The pid of a journal file's name, in its one spelling (`journal_12.log`, not `journal_012`).
pub(super) fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("journal_")?;
    let digits = rest.split('.').next()?;
    let pid: u32 = digits.parse().ok()?;
    let known = [".lock", ".snapshot", ".log", ".log.next"];
    (pid.to_string() == digits && known.contains(&&rest[digits.len()..])).then_some(pid)
}

/// The pids with journal files in `dir`, in ascending order.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir(dir)?
        .filter_map(|entry| pid_of(entry.ok()?.file_name().to_str()?))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The first frame of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHeader {
    pub version: u32,
    /// The snapshot this log continues.
    pub generation: u64,
    pub writer: Writer,
}

/// The fd of this process's journal lock, so that a forked child can let go of the copy it
/// inherits (a lock held by the child would make its dead parent look alive); -1 when none.
pub(super) static LOCK_FD: AtomicI32 = AtomicI32::new(-1);

/// In a forked child: closes the inherited fd of the parent's journal lock. The lock stays
/// the parent's (it is held as long as the parent's own fd is open).
pub fn forget_inherited_lock() {
    let fd = LOCK_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        let _ = nix::unistd::close(fd);
    }
}

/// A file as it was opened: the path's file is still it while both agree.
pub(super) fn identity(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

pub(super) fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => identity(&a) == identity(&b) && a.nlink() > 0,
        _ => false,
    }
}

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// Writes a new log (its header frame) atomically at `name`; returns it open for appending.
pub(super) fn new_log(dir: &Path, name: &str, header: &LogHeader) -> io::Result<File> {
    let header = frame(&postcard::to_stdvec(header).map_err(io::Error::other)?);
    let path = write_atomic_with(dir, name, |file| file.write_all(&header))?;
    open_append(&path)
}

/// Takes `journal_<pid>.lock` in `dir`, without waiting: `Ok(None)` when another process holds
/// it.
pub(super) fn take_lock(dir: &Path, pid: u32) -> io::Result<Option<Flock<File>>> {
    create_output_dir(dir)?;
    let path = dir.join(lock_file_name(pid));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&path)
        .map_err(|err| context(&path, err))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(io::Error::from(errno)),
    }
}

/// Removes every file of the journal of `pid` in `dir`, the lock file last.
pub(super) fn remove_files(dir: &Path, pid: u32) {
    for name in [
        log_file_name(pid),
        next_log_file_name(pid),
        snapshot_file_name(pid),
        lock_file_name(pid),
    ] {
        let _ = fs::remove_file(dir.join(name));
    }
}

pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub(super) fn context(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

pub(super) fn open_for_reading(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|err| context(path, err))?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ))
    }
}
