//! The crash-safe journal of one process: what its collector drains, appended to the output dir
//! as it goes, so that the reports of a process killed without warning (vLLM SIGKILLs its engine
//! at shutdown) can be written afterwards from it (`vllm-profiler recover`).
//!
//! Files per process, beside its reports:
//! - `journal_<pid>.lock`: held (`flock`) by the writing process for as long as it journals,
//!   so that a reader can tell a running writer from a dead one, whatever pid namespace either
//!   is in; the kernel lets go of it when the writer dies, even by SIGKILL;
//! - `journal_<pid>.snapshot`: the whole session at one moment, generation G, replaced
//!   atomically (a temporary file, then a rename);
//! - `journal_<pid>.log`: what came after that moment: a header frame naming G, then one batch
//!   frame per collector turn. A frame is `[length: u32 LE][CRC-32: u32 LE][postcard bytes]`;
//!   a torn, damaged or empty frame ends the log there.
//!
//! Compaction (once the log passed [`LOG_LIMIT_BYTES`]) never stops the collector: the state is
//! taken at one turn, a new log `journal_<pid>.log.next` of G+1 starts empty, and while the
//! snapshot of G+1 is written on another thread every batch goes to both logs, so the old pair
//! stays whole. Once the new snapshot is in place the new log is renamed over the old. A reader
//! takes the log whose generation is the snapshot's: the old one, `.log.next` between the two
//! renames, the new one after.
//!
//! This module owns the files and their framing; what goes in them is the session's
//! (`session::snapshot`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::atomic_file::{create_output_dir, write_atomic_with};

/// Bumped whenever what the journal holds changes; a journal of another version is refused.
pub const JOURNAL_VERSION: u32 = 1;
/// The log is compacted into a new snapshot once this much was appended since the last one, so
/// that a journal holds at most one snapshot (bounded by the histories) and this much more.
pub const LOG_LIMIT_BYTES: u64 = 32 << 20;
/// Largest frame a reader accepts; a larger length is damage, never an allocation.
pub const MAX_FRAME_BYTES: u32 = 256 << 20;
/// After a failed write, the next try waits this long (an unwritable dir must not cost a
/// snapshot every turn).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long the final export waits for a snapshot being written before it removes the files.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

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
fn pid_of(name: &str) -> Option<u32> {
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

/// Which process wrote a journal, for the readers that find no lock file to ask.
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

    /// Whether the process that wrote the journal still runs, as far as `/proc` can tell: the
    /// same boot, the same pid with the same start time, and not a zombie. Only where the lock
    /// file is gone; the lock says it for any pid namespace.
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

/// The fd of this process's journal lock, so that a forked child can let go of the copy it
/// inherits (a lock held by the child would make its dead parent look alive); -1 when none.
static LOCK_FD: AtomicI32 = AtomicI32::new(-1);

/// In a forked child: closes the inherited fd of the parent's journal lock. The lock stays
/// the parent's (it is held as long as the parent's own fd is open).
pub fn forget_inherited_lock() {
    let fd = LOCK_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        let _ = nix::unistd::close(fd);
    }
}

/// A file as it was opened: the path's file is still it while both agree.
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => identity(&a) == identity(&b) && a.nlink() > 0,
        _ => false,
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// Writes a new log (its header frame) atomically at `name`; returns it open for appending.
fn new_log(dir: &Path, name: &str, header: &LogHeader) -> io::Result<File> {
    let header = frame(&postcard::to_stdvec(header).map_err(io::Error::other)?);
    let path = write_atomic_with(dir, name, |file| file.write_all(&header))?;
    open_append(&path)
}

/// Takes `journal_<pid>.lock` in `dir`, without waiting: `Ok(None)` when another process holds
/// it.
fn take_lock(dir: &Path, pid: u32) -> io::Result<Option<Flock<File>>> {
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

/// The writing side: the files of one process's journal.
pub struct Journal {
    pid: u32,
    state: State,
    generation: u64,
    /// Names and shapes the journal holds so far (a batch carries only the new ones).
    pub names_written: usize,
    pub shapes_written: usize,
    /// After a failed snapshot, the next one waits until then.
    retry_at: Option<Instant>,
    /// The log size past which it is compacted ([`LOG_LIMIT_BYTES`]).
    pub log_limit: u64,
}

enum State {
    /// Not opened yet, or retired: the next write is a snapshot.
    Idle,
    Open(Box<Open>),
    /// After the final export: never written again.
    Closed,
}

struct Open {
    dir: PathBuf,
    /// Held as long as the journal is this process's, through failures too.
    lock: Flock<File>,
    log: File,
    appended: u64,
    /// A write failed (a frame may be half written): the next write is a whole snapshot.
    broken: bool,
    compaction: Option<Compaction>,
    /// After a failed compaction, the next one waits until then.
    compact_after: Option<Instant>,
}

/// A compaction under way: the new log, and the snapshot being written elsewhere.
struct Compaction {
    next: File,
    job: Arc<Mutex<JobState>>,
}

#[derive(Default)]
struct JobState {
    /// The journal no longer wants it: the snapshot must not land.
    cancelled: bool,
    /// The snapshot's write, once it ended.
    result: Option<io::Result<()>>,
}

/// The writing of one snapshot, to be run on a thread of the caller's (it takes as long as the
/// history is large); the collector goes on meanwhile. Dropped unrun, the compaction fails and
/// is tried again later.
pub struct SnapshotJob {
    dir: PathBuf,
    pid: u32,
    write: Option<SnapshotWriter>,
    job: Arc<Mutex<JobState>>,
}

/// What writes a snapshot's bytes.
pub type SnapshotWriter = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

impl SnapshotJob {
    pub fn run(mut self) {
        let mut job = self.job.lock();
        if job.cancelled || job.result.is_some() {
            return;
        }
        let write = self.write.take().expect("run once");
        let written = write_atomic_with(&self.dir, &snapshot_file_name(self.pid), |file| {
            let mut out = BufWriter::with_capacity(1 << 16, file);
            write(&mut out)?;
            out.flush()
        });
        job.result = Some(written.map(drop));
    }
}

impl Drop for SnapshotJob {
    fn drop(&mut self) {
        let mut job = self.job.lock();
        if job.result.is_none() {
            job.result = Some(Err(io::Error::other("the snapshot was never written")));
        }
    }
}

/// What the journal needs at a collector turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// Append the batch.
    Batch,
    /// Write a whole snapshot now (nothing open, the files moved or vanished, a failed write,
    /// events missed).
    Snapshot,
    /// Append the batch, then start a compaction.
    Compaction,
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
            log_limit: LOG_LIMIT_BYTES,
        }
    }

    /// The generation the next snapshot starts.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether a snapshot may be tried now (not closed, and not waiting after a failure).
    pub fn may_snapshot(&self) -> bool {
        !self.is_closed() && self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Ends a compaction whose snapshot was written: the new log replaces the old one.
    pub fn poll(&mut self) {
        let done = match &self.state {
            State::Open(open) => open
                .compaction
                .as_ref()
                .is_some_and(|c| c.job.try_lock().is_some_and(|job| job.result.is_some())),
            _ => false,
        };
        if done {
            self.end_compaction();
        }
    }

    /// Ends the compaction under way, waiting for its snapshot if it is being written: the new
    /// log replaces the old one if the snapshot landed, else it goes.
    fn end_compaction(&mut self) {
        let pid = self.pid;
        let State::Open(open) = &mut self.state else {
            return;
        };
        let Some(compaction) = open.compaction.take() else {
            return;
        };
        let landed = match compaction.job.try_lock_for(SNAPSHOT_WAIT) {
            Some(mut job) => {
                job.cancelled = true;
                matches!(job.result, Some(Ok(())))
            }
            None => false,
        };
        let renamed = landed
            && fs::rename(
                open.dir.join(next_log_file_name(pid)),
                open.dir.join(log_file_name(pid)),
            )
            .is_ok();
        if renamed {
            open.log = compaction.next;
            open.appended = 0;
            self.generation += 1;
        } else {
            // The old pair is whole still (or the snapshot landed and its log could not be
            // put in place: a whole snapshot comes next).
            let _ = fs::remove_file(open.dir.join(next_log_file_name(pid)));
            open.broken |= landed;
            open.compact_after = Some(Instant::now() + RETRY_AFTER);
        }
    }

    /// What this turn's write must be, for a journal in `dir`.
    pub fn need(&self, dir: &Path) -> Need {
        let State::Open(open) = &self.state else {
            return Need::Snapshot;
        };
        if open.compaction.is_some() {
            return Need::Batch;
        }
        let pid = self.pid;
        let in_place = open.dir == dir
            && same_file(&open.lock, &dir.join(lock_file_name(pid)))
            && same_file(&open.log, &dir.join(log_file_name(pid)))
            && fs::symlink_metadata(dir.join(snapshot_file_name(pid))).is_ok();
        if open.broken || !in_place {
            Need::Snapshot
        } else if open.appended >= self.log_limit
            && open.compact_after.is_none_or(|at| Instant::now() >= at)
        {
            Need::Compaction
        } else {
            Need::Batch
        }
    }

    /// Starts the journal in `dir` over, with a snapshot written now by `write` and a new log.
    /// The journal of another dir it was in before is removed. A journal found in `dir` of a
    /// dead process with this pid (a pid reused) is replaced; `Ok(Some(warning))` says so.
    pub fn write_snapshot(
        &mut self,
        dir: &Path,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Option<String>> {
        if self.is_closed() {
            return Ok(None);
        }
        self.end_compaction();
        let pid = self.pid;
        let generation = self.generation + 1;
        // The lock is kept while its file is in place; one removed is taken again.
        let reuse = matches!(&self.state, State::Open(open) if open.dir == dir
            && same_file(&open.lock, &dir.join(lock_file_name(pid))));
        let lock_path = dir.join(lock_file_name(pid));
        let lock_was_there = fs::symlink_metadata(&lock_path).is_ok();
        let lock = if reuse {
            Ok(None)
        } else {
            take_lock(dir, pid).and_then(|lock| {
                lock.map(Some).ok_or_else(|| {
                    io::Error::other(format!(
                        "another process with pid {pid} journals into {}",
                        dir.display()
                    ))
                })
            })
        };
        let result = lock.and_then(|lock| {
            let ours = matches!(&self.state, State::Open(open) if open.dir == dir);
            let replaced = !ours && fs::symlink_metadata(dir.join(snapshot_file_name(pid))).is_ok();
            let written = write_atomic_with(dir, &snapshot_file_name(pid), |file| {
                let mut out = BufWriter::with_capacity(1 << 16, file);
                write(&mut out)?;
                out.flush()
            })
            .and_then(|_| {
                let header = LogHeader {
                    version: JOURNAL_VERSION,
                    generation,
                    writer: Writer::this_process(pid),
                };
                new_log(dir, &log_file_name(pid), &header)
            });
            match written {
                Ok(log) => Ok((lock, log, replaced)),
                Err(err) => {
                    if lock.is_some() && !lock_was_there {
                        // Nothing came of it (a full disk): leave nothing behind.
                        let _ = fs::remove_file(&lock_path);
                    }
                    Err(err)
                }
            }
        });
        let (lock, log, replaced) = match result {
            Ok(parts) => parts,
            Err(err) => {
                if let State::Open(open) = &mut self.state {
                    open.broken = true;
                }
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                return Err(err);
            }
        };
        let lock = match (lock, std::mem::replace(&mut self.state, State::Idle)) {
            (None, State::Open(open)) => open.lock,
            (Some(lock), previous) => {
                if let State::Open(old) = previous {
                    if old.dir != dir {
                        remove_files(&old.dir, pid); // moved to another dir
                    }
                }
                lock
            }
            (None, _) => unreachable!("the lock is kept only for the dir open already"),
        };
        LOCK_FD.store(lock.as_raw_fd(), Ordering::Release);
        self.generation = generation;
        self.retry_at = None;
        self.state = State::Open(Box::new(Open {
            dir: dir.to_path_buf(),
            lock,
            log,
            appended: 0,
            broken: false,
            compaction: None,
            compact_after: None,
        }));
        Ok(replaced.then(|| {
            format!(
                "a journal of an earlier process with pid {pid} in {} was never recovered and \
                 is replaced (run `vllm-profiler recover` before restarting into the same dir)",
                dir.display()
            )
        }))
    }

    /// Starts a compaction: a new, empty log of the next generation, appended to beside the
    /// old one until the returned job has written the snapshot that `write` makes (of the
    /// state right after the batch last appended).
    pub fn start_compaction(&mut self, write: SnapshotWriter) -> io::Result<SnapshotJob> {
        let pid = self.pid;
        let generation = self.generation + 1;
        let State::Open(open) = &mut self.state else {
            return Err(io::Error::other("the journal is not open"));
        };
        let header = LogHeader {
            version: JOURNAL_VERSION,
            generation,
            writer: Writer::this_process(pid),
        };
        let next = match new_log(&open.dir, &next_log_file_name(pid), &header) {
            Ok(next) => next,
            Err(err) => {
                open.compact_after = Some(Instant::now() + RETRY_AFTER);
                return Err(err);
            }
        };
        let job = Arc::new(Mutex::new(JobState::default()));
        open.compaction = Some(Compaction {
            next,
            job: job.clone(),
        });
        Ok(SnapshotJob {
            dir: open.dir.clone(),
            pid,
            write: Some(write),
            job,
        })
    }

    /// Appends one batch (postcard bytes) as a frame to the open log (and to the new one of a
    /// compaction under way).
    pub fn append(&mut self, batch: &[u8]) -> io::Result<()> {
        let State::Open(open) = &mut self.state else {
            return Ok(());
        };
        if open.broken {
            return Ok(());
        }
        let bytes = frame(batch);
        let mut written = open.log.write_all(&bytes);
        if let (Ok(()), Some(compaction)) = (&written, &mut open.compaction) {
            written = compaction.next.write_all(&bytes);
        }
        match written {
            Ok(()) => {
                open.appended += bytes.len() as u64;
                Ok(())
            }
            Err(err) => {
                // A frame may be half written: neither log can be appended to after it. The
                // files stay (whole up to that frame) until a snapshot replaces them.
                open.broken = true;
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                self.end_compaction();
                Err(err)
            }
        }
    }

    /// Removes the files (the reports now hold everything); the next write starts anew with a
    /// snapshot.
    pub fn retire(&mut self) {
        self.end_compaction();
        if let State::Open(open) = std::mem::replace(&mut self.state, State::Idle) {
            remove_files(&open.dir, self.pid);
            LOCK_FD.store(-1, Ordering::Release);
        }
    }

    /// Removes the files for good: the final export folded them in.
    pub fn close(&mut self) {
        self.retire();
        self.state = State::Closed;
    }
}

/// Removes every file of the journal of `pid` in `dir`, the lock file last.
fn remove_files(dir: &Path, pid: u32) {
    for name in [
        log_file_name(pid),
        next_log_file_name(pid),
        snapshot_file_name(pid),
        lock_file_name(pid),
    ] {
        let _ = fs::remove_file(dir.join(name));
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

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

fn context(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

fn open_for_reading(path: &Path) -> io::Result<File> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(frames: &[&[u8]], tail: &[u8]) -> (tempfile::TempDir, Vec<Result<Vec<u8>, String>>) {
        let dir = tempfile::tempdir().unwrap();
        let header = LogHeader {
            version: JOURNAL_VERSION,
            generation: 3,
            writer: Writer::this_process(9),
        };
        let mut bytes = frame(&postcard::to_stdvec(&header).unwrap());
        for f in frames {
            bytes.extend(frame(f));
        }
        bytes.extend_from_slice(tail);
        fs::write(dir.path().join(log_file_name(9)), bytes).unwrap();
        let mut reader = open_log(dir.path(), 9, 3)
            .unwrap()
            .expect("a log of generation 3");
        let mut got = Vec::new();
        while let Some(f) = reader.next_frame() {
            got.push(f);
        }
        (dir, got)
    }

    #[test]
    fn frames_read_back_and_a_torn_damaged_or_empty_tail_stops_the_log() {
        let (_, got) = log_of(&[b"one", b"two"], b"");
        assert_eq!(got, [Ok(b"one".to_vec()), Ok(b"two".to_vec())]);
        let whole = frame(b"three");
        for cut in 1..whole.len() {
            let (_, got) = log_of(&[b"one"], &whole[..cut]);
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert!(got[1].is_err(), "cut at {cut}");
        }
        let mut damaged = whole.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(log_of(&[], &damaged).1[0].is_err());
        // Zeros (a power-loss tail) are an empty frame: damage, the end.
        let (_, got) = log_of(&[b"one"], &[0; 4096]);
        assert_eq!(got.len(), 2);
        assert!(got[1].is_err());
        // A length past the limit is damage, not an allocation.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend([0; 12]);
        assert!(log_of(&[], &huge).1[0].is_err());
    }

    #[test]
    fn a_log_of_another_generation_is_not_the_snapshots() {
        let (dir, _) = log_of(&[b"one"], b"");
        assert!(open_log(dir.path(), 9, 2).unwrap().is_none());
        assert!(open_log(dir.path(), 9, 3).unwrap().is_some());
        // Between the renames of a compaction the next log is the snapshot's.
        fs::rename(
            dir.path().join(log_file_name(9)),
            dir.path().join(next_log_file_name(9)),
        )
        .unwrap();
        assert!(open_log(dir.path(), 9, 3).unwrap().is_some());
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
    fn a_held_lock_is_a_running_writer_and_a_free_one_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let held = take_lock(dir.path(), 5).unwrap().expect("free");
        assert!(matches!(claim(dir.path(), 5).unwrap(), Claimed::Running));
        assert!(
            take_lock(dir.path(), 5).unwrap().is_none(),
            "one writer per journal"
        );
        drop(held);
        match claim(dir.path(), 5).unwrap() {
            Claimed::Claim(claim) => assert!(claim.locked()),
            Claimed::Running => panic!("the lock was let go"),
        }
        // No lock file at all: claimed, without a lock.
        match claim(dir.path(), 6).unwrap() {
            Claimed::Claim(claim) => assert!(!claim.locked()),
            Claimed::Running => panic!("nothing holds it"),
        }
    }

    #[test]
    fn list_takes_each_journal_once_by_its_one_spelling() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "journal_12.snapshot",
            "journal_12.log",
            "journal_12.lock",
            "journal_7.log.next",
            "journal_9.log",
            "journal_012.snapshot",
            "journal_+15.snapshot",
            "journal_x.snapshot",
            "journal_3.snapshot.tmp",
            "performance_summary_3.json",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), [7, 9, 12]);
    }
}
