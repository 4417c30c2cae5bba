//! The crash-safe journal of one process: what its collector drains, appended to the output dir
//! as it goes, so that the reports of a process killed without warning (vLLM SIGKILLs its engine
//! at shutdown) can be written afterwards from it (`vllm-profiler recover`).
//!
//! Two files per process, beside its reports:
//! - `journal_<pid>.snapshot`: the whole session at one moment, generation G, replaced
//!   atomically (a temporary file, then a rename);
//! - `journal_<pid>.log`: what came after that moment: a header frame naming G, then one batch
//!   frame per collector drain. A frame is `[length: u32 LE][CRC-32: u32 LE][postcard bytes]`;
//!   a torn or damaged frame ends the log there (it can only be the last one written).
//!
//! Compaction writes snapshot G+1, then a new log of G+1. A log older than the snapshot beside
//! it (a kill between the two renames) is ignored: all it held is in the snapshot. Both files go
//! once a final export has folded them in.
//!
//! This module owns the files and their framing; what goes in them is the session's
//! (`session::snapshot`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use crate::export::write_atomic_with;

/// Bumped whenever what the journal holds changes; a journal of another version is refused.
pub const JOURNAL_VERSION: u32 = 1;
/// The log is compacted into a new snapshot once this much was appended since the last one, so
/// that a journal holds at most one snapshot (bounded by the histories) and this much more.
pub const LOG_LIMIT_BYTES: u64 = 32 << 20;
/// Largest frame a reader accepts; a larger length is damage, never an allocation.
pub const MAX_FRAME_BYTES: u32 = 256 << 20;
/// Largest snapshot a reader loads.
pub const MAX_SNAPSHOT_BYTES: u64 = 2 << 30;
/// Largest log a reader loads: one snapshot's worth of appends and a last large batch.
pub const MAX_LOG_BYTES: u64 = 1 << 30;
/// After a failed write, the next try waits this long (an unwritable dir must not cost a
/// snapshot every drain).
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub fn snapshot_file_name(pid: u32) -> String {
    format!("journal_{pid}.snapshot")
}

pub fn log_file_name(pid: u32) -> String {
    format!("journal_{pid}.log")
}

/// The pids of the journals in `dir` (those with a snapshot), in ascending order.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let name = name.to_str()?;
            name.strip_prefix("journal_")?
                .strip_suffix(".snapshot")?
                .parse()
                .ok()
        })
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Which process wrote a journal: enough to tell, later, whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub pid: u32,
    /// `/proc/sys/kernel/random/boot_id`: the same pid after a reboot is another process.
    pub boot_id: String,
    /// The process's start time (`/proc/<pid>/stat`, clock ticks since boot): the same pid
    /// reused by a later process has another.
    pub start_ticks: u64,
}

impl Writer {
    /// The calling process, writing the journal of session `pid` (its own pid, but for
    /// tests).
    pub fn this_process(pid: u32) -> Writer {
        Writer {
            pid,
            boot_id: boot_id(),
            start_ticks: stat(std::process::id()).map_or(0, |(_, ticks)| ticks),
        }
    }

    /// Whether the process that wrote the journal is still running on this machine. A journal
    /// from another boot (or another machine) is of a process that is not running here, and so
    /// is one of a process killed but not reaped yet (a zombie).
    pub fn is_running(&self) -> bool {
        self.boot_id == boot_id()
            && matches!(stat(self.pid), Some((state, ticks)) if ticks == self.start_ticks
                && state != 'Z' && state != 'X')
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// The state (field 3) and start time (field 22) of `/proc/<pid>/stat`, read after the last
/// `)` (the process name before it may hold anything).
fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    // The state is field 3, so the start time (22) is 19 further on.
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// The first frame of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHeader {
    pub version: u32,
    /// The snapshot this log continues.
    pub generation: u64,
    pub writer: Writer,
}

/// The writing side: the files of one process's journal.
pub struct Journal {
    pid: u32,
    state: State,
    generation: u64,
    /// Names and shapes the journal holds so far (a batch carries only the new ones).
    pub names_written: usize,
    pub shapes_written: usize,
    retry_at: Option<Instant>,
}

enum State {
    /// Not opened yet, or retired, or failed: the next write is a snapshot.
    Idle,
    Open {
        dir: PathBuf,
        log: File,
        appended: u64,
    },
    /// After the final export: never written again.
    Closed,
}

impl Journal {
    pub fn new(pid: u32) -> Journal {
        Journal {
            pid,
            state: State::Idle,
            generation: 0,
            names_written: 0,
            shapes_written: 0,
            retry_at: None,
        }
    }

    /// The generation the next snapshot starts.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the next write must be a snapshot into `dir` (nothing open there yet, or the log
    /// has grown past its limit).
    pub fn needs_snapshot(&self, dir: &Path) -> bool {
        match &self.state {
            State::Open {
                dir: open,
                appended,
                ..
            } => open != dir || *appended >= LOG_LIMIT_BYTES,
            _ => true,
        }
    }

    /// Whether a write may be tried now (not closed, and not waiting after a failure).
    pub fn may_write(&self) -> bool {
        !self.is_closed() && self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Starts a new generation in `dir`: the snapshot (written by `write`), then a new log.
    /// The journal of another dir it was in before is removed.
    pub fn write_snapshot(
        &mut self,
        dir: &Path,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        let generation = self.generation + 1;
        let result = (|| {
            write_atomic_with(dir, &snapshot_file_name(self.pid), |file| {
                let mut out = BufWriter::with_capacity(1 << 16, file);
                write(&mut out)?;
                out.flush()
            })?;
            let header = LogHeader {
                version: JOURNAL_VERSION,
                generation,
                writer: Writer::this_process(self.pid),
            };
            let header = frame(&postcard::to_stdvec(&header).map_err(io::Error::other)?);
            let path = write_atomic_with(dir, &log_file_name(self.pid), |file| {
                file.write_all(&header)
            })?;
            OpenOptions::new()
                .append(true)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(path)
        })();
        match result {
            Ok(log) => {
                if let State::Open { dir: old, .. } = &self.state {
                    if old != dir {
                        remove_files(old, self.pid);
                    }
                }
                self.generation = generation;
                self.state = State::Open {
                    dir: dir.to_path_buf(),
                    log,
                    appended: 0,
                };
                self.retry_at = None;
                Ok(())
            }
            Err(err) => Err(self.failed(err)),
        }
    }

    /// Appends one batch (postcard bytes) as a frame to the open log.
    pub fn append(&mut self, batch: &[u8]) -> io::Result<()> {
        let State::Open { log, appended, .. } = &mut self.state else {
            return Ok(());
        };
        let bytes = frame(batch);
        match log.write_all(&bytes) {
            Ok(()) => {
                *appended += bytes.len() as u64;
                Ok(())
            }
            // A frame may be half written: the log cannot be appended to after it.
            Err(err) => Err(self.failed(err)),
        }
    }

    fn failed(&mut self, err: io::Error) -> io::Error {
        if !self.is_closed() {
            self.state = State::Idle;
        }
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        err
    }

    /// Removes the files (the reports now hold everything); the next write starts anew with a
    /// snapshot.
    pub fn retire(&mut self) {
        if let State::Open { dir, .. } = &self.state {
            remove_files(dir, self.pid);
        }
        if !self.is_closed() {
            self.state = State::Idle;
        }
    }

    /// Removes the files for good: the final export folded them in.
    pub fn close(&mut self) {
        self.retire();
        self.state = State::Closed;
    }
}

fn remove_files(dir: &Path, pid: u32) {
    let _ = fs::remove_file(dir.join(log_file_name(pid)));
    let _ = fs::remove_file(dir.join(snapshot_file_name(pid)));
}

/// Removes the journal of `pid` in `dir` (after its reports were recovered).
pub fn remove(dir: &Path, pid: u32) {
    remove_files(dir, pid);
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A log as read back: its header, the payloads of its whole frames, and why reading stopped
/// early, if it did (a torn last frame after a kill, or damage).
#[derive(Debug)]
pub struct Log {
    pub header: LogHeader,
    pub batches: Vec<Vec<u8>>,
    pub stopped: Option<String>,
}

/// Reads the snapshot of `pid` in `dir`, at most [`MAX_SNAPSHOT_BYTES`].
pub fn read_snapshot(dir: &Path, pid: u32) -> io::Result<Vec<u8>> {
    read_bounded(&dir.join(snapshot_file_name(pid)), MAX_SNAPSHOT_BYTES)
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_for_reading(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is {len} bytes, more than {limit}", path.display()),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn open_for_reading(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))
        .and_then(|file| {
            if file.metadata()?.is_file() {
                Ok(file)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a regular file", path.display()),
                ))
            }
        })
}

/// Reads the log of `pid` in `dir`. Every length is checked against what is left of the
/// file before anything is allocated for it.
pub fn read_log(dir: &Path, pid: u32) -> io::Result<Log> {
    let path = dir.join(log_file_name(pid));
    let bytes = read_bounded(&path, MAX_LOG_BYTES)?;
    let mut frames = Frames { rest: &bytes };
    let header = match frames.next() {
        Some(Ok(payload)) => postcard::from_bytes::<LogHeader>(payload).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad header: {err}", path.display()),
            )
        })?,
        Some(Err(why)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            ))
        }
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: empty", path.display()),
            ))
        }
    };
    let mut batches = Vec::new();
    let mut stopped = None;
    for frame in frames {
        match frame {
            Ok(payload) => batches.push(payload.to_vec()),
            Err(why) => {
                stopped = Some(why);
                break;
            }
        }
    }
    Ok(Log {
        header,
        batches,
        stopped,
    })
}

struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let left = self.rest.len();
        if left < 8 {
            self.rest = &[];
            return Some(Err(format!(
                "a torn frame header ({left} bytes) at the end"
            )));
        }
        let len = u32::from_le_bytes(self.rest[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(self.rest[4..8].try_into().expect("4 bytes"));
        let body = &self.rest[8..];
        if len > MAX_FRAME_BYTES || len as usize > body.len() {
            self.rest = &[];
            return Some(Err(format!(
                "a frame of {len} bytes with {} left: torn at the end, or damaged",
                body.len()
            )));
        }
        let (payload, rest) = body.split_at(len as usize);
        if crc32fast::hash(payload) != crc {
            self.rest = &[];
            return Some(Err(
                "a frame whose CRC does not match: torn or damaged".into()
            ));
        }
        self.rest = rest;
        Some(Ok(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_a_torn_or_damaged_tail_stops_the_log() {
        let mut bytes = frame(b"one");
        bytes.extend(frame(b"two"));
        let whole = bytes.len();
        bytes.extend(frame(b"three"));
        let read = |b: &[u8]| {
            Frames { rest: b }
                .map(|f| f.map(|p| p.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            read(&bytes),
            [
                Ok(b"one".to_vec()),
                Ok(b"two".to_vec()),
                Ok(b"three".to_vec())
            ]
        );
        for cut in whole + 1..bytes.len() {
            let got = read(&bytes[..cut]);
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert!(got[2].is_err(), "cut at {cut}");
        }
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(read(&damaged)[2].is_err());
        // A length past the limit is damage, not an allocation.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend([0; 12]);
        assert_eq!(read(&huge).len(), 1);
        assert!(read(&huge)[0].is_err());
    }

    #[test]
    fn this_process_is_running_and_another_start_time_is_not() {
        let me = Writer::this_process(std::process::id());
        assert!(me.start_ticks > 0);
        assert!(me.is_running());
        assert!(!Writer {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        }
        .is_running());
        assert!(!Writer {
            boot_id: "another boot".into(),
            ..me
        }
        .is_running());
    }

    #[test]
    fn a_killed_process_not_reaped_yet_is_not_running() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let writer = Writer {
            pid: child.id(),
            boot_id: boot_id(),
            start_ticks: stat(child.id()).unwrap().1,
        };
        assert!(writer.is_running());
        child.kill().unwrap();
        // Not waited for: a zombie until then.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stat(child.id()).is_some_and(|(state, _)| state != 'Z') {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!writer.is_running());
        child.wait().unwrap();
        assert!(!writer.is_running());
    }

    #[test]
    fn list_finds_journals_by_their_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "journal_12.snapshot",
            "journal_12.log",
            "journal_7.snapshot",
            "journal_x.snapshot",
            "journal_9.log",
            "performance_summary_3.json",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), [7, 12]);
    }
}
