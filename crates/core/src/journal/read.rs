//! The reading side: claiming a dead writer's journal, then reading its snapshot and log.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use super::files::*;
use super::writer::Writer;
use super::*;

/// The reading side's hold on a journal whose writer is not running: its lock, taken (or no
/// lock file was there), so that no writer can come back while it is read, recovered and
/// removed.
pub struct Claim {
    dir: PathBuf,
    pid: u32,
    _lock: Option<Flock<File>>,
}

/// What became of an attempt to claim a journal.
pub enum Claimed {
    Claim(Claim),
    /// Its writer holds the lock: it is running.
    Running,
}

/// Claims the journal of `pid` in `dir`: takes its lock file without waiting (another process
/// holding it is running). Where no lock file is left, the claim holds no lock and the caller
/// asks [`Writer::is_running`] of the snapshot's writer.
pub fn claim(dir: &Path, pid: u32) -> io::Result<Claimed> {
    let path = dir.join(lock_file_name(pid));
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok(Claimed::Claim(Claim {
                dir: dir.to_path_buf(),
                pid,
                _lock: None,
            }))
        }
        Err(err) => return Err(context(&path, err)),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            // The lock file may have been replaced meanwhile by a writer starting over.
            if !same_file(&lock, &path) {
                return Ok(Claimed::Running);
            }
            Ok(Claimed::Claim(Claim {
                dir: dir.to_path_buf(),
                pid,
                _lock: Some(lock),
            }))
        }
        Err((_, Errno::EWOULDBLOCK)) => Ok(Claimed::Running),
        Err((_, errno)) => Err(context(&path, io::Error::from(errno))),
    }
}

impl Claim {
    /// Whether a lock was taken: the writer is known not to be running.
    pub fn locked(&self) -> bool {
        self._lock.is_some()
    }

    /// The dir of the journal claimed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the journal's files (its reports were written from it).
    pub fn remove(self) {
        remove_files(&self.dir, self.pid);
    }
}

/// The snapshot of `pid` in `dir`, open for a streaming read.
pub fn open_snapshot(dir: &Path, pid: u32) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(
        1 << 16,
        open_for_reading(&dir.join(snapshot_file_name(pid)))?,
    ))
}

/// A log being read: its header, then its frames one at a time (never more than one frame in
/// memory, every length checked before anything is allocated for it).
pub struct LogReader {
    pub header: LogHeader,
    input: BufReader<File>,
    left: u64,
    path: PathBuf,
}

/// The log of `pid` in `dir` that continues snapshot `generation`: `journal_<pid>.log`, or
/// `journal_<pid>.log.next` when a kill came between the two renames of a compaction. `None`
/// when neither does (a kill between a first snapshot and its log: the snapshot alone is
/// whole).
pub fn open_log(dir: &Path, pid: u32, generation: u64) -> io::Result<Option<LogReader>> {
    for name in [log_file_name(pid), next_log_file_name(pid)] {
        let path = dir.join(&name);
        let file = match open_for_reading(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let left = file.metadata()?.len();
        let mut reader = LogReader {
            header: LogHeader {
                version: 0,
                generation: 0,
                writer: Writer {
                    pid: 0,
                    boot_id: String::new(),
                    start_ticks: 0,
                },
            },
            input: BufReader::with_capacity(1 << 16, file),
            left,
            path,
        };
        let header = match reader.next_frame() {
            Some(Ok(payload)) => postcard::from_bytes::<LogHeader>(&payload).ok(),
            _ => None,
        };
        match header {
            Some(header)
                if header.version == JOURNAL_VERSION && header.generation == generation =>
            {
                reader.header = header;
                return Ok(Some(reader));
            }
            // Another generation (older: its events are in the snapshot), or damaged.
            _ => continue,
        }
    }
    Ok(None)
}

impl LogReader {
    /// The next whole frame's payload; `Some(Err(why))` for a torn, damaged or empty one (the
    /// log ends there); `None` at its end.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, String>> {
        if self.left == 0 {
            return None;
        }
        let mut head = [0u8; 8];
        if self.left < 8 || self.input.read_exact(&mut head).is_err() {
            self.left = 0;
            return Some(Err("a torn frame header at the end".into()));
        }
        self.left -= 8;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_FRAME_BYTES || u64::from(len) > self.left {
            let left = self.left;
            self.left = 0;
            return Some(Err(format!(
                "a frame of {len} bytes with {left} left: torn at the end, or damaged"
            )));
        }
        let mut payload = vec![0; len as usize];
        if self.input.read_exact(&mut payload).is_err() {
            self.left = 0;
            return Some(Err("a frame cut short".into()));
        }
        self.left -= u64::from(len);
        if crc32fast::hash(&payload) != crc {
            self.left = 0;
            return Some(Err(
                "a frame whose CRC does not match: torn or damaged".into()
            ));
        }
        Some(Ok(payload))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
