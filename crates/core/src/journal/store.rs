//! The writing side of one process's journal: the snapshot, the log, compaction and retirement.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use nix::fcntl::Flock;
use parking_lot::Mutex;

use crate::atomic_file::write_atomic_with;

use super::files::*;
use super::writer::Writer;
use super::*;

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
