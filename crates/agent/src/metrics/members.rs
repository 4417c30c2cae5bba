//! The profiled processes of a host that share one Prometheus address: a group in the runtime
//! dir, `<runtime dir>/prometheus-<addr>/`.
//!
//! - Each member writes its figures to `<pid>.json` ([`PublishedMetrics`]) every
//!   [`PUBLISH_PERIOD`], by a write to `<pid>.json.tmp` and a rename, so that a reader never
//!   sees half a file.
//! - The member that holds the `flock` of `serve.lock` serves the port. The kernel drops the
//!   lock when its holder exits, however it exits (SIGKILL too), and the next member to try it
//!   takes over. This needs no GPU and no fixed port per process.
//! - The server reads the others' files (at most every half second). They are hostile input:
//!   at most [`MAX_SCANNED`] names are looked at and [`MAX_MEMBERS`] files read (those of the
//!   lowest pids), each a regular file of this user of at most
//!   [`PublishedMetrics::MAX_BYTES`], opened without following a symlink and without blocking
//!   (a FIFO is skipped), whose pid is the one its name says; of each, at most
//!   [`MAX_DEVICES`] devices are taken, each once, and a negative sum is taken as 0.
//! - A file not rewritten for the expiry (the member exited, or hangs) is no longer served,
//!   and the server removes it: a crash-looping server does not grow the label set without
//!   bound.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use vllm_profiler_format::{unix_now, MetricsSnapshot, PublishedMetrics, SCHEMA_VERSION};
use vllm_profiler_gpu::fork_closed::{self, CloseInChild};
use vllm_profiler_gpu::shared::{open_shared_file, prepare_runtime_dir};

/// How often a member rewrites its file.
pub(crate) const PUBLISH_PERIOD: Duration = Duration::from_secs(1);
/// Names in the group dir looked at per read, at most (any names: a dir of more is not ours).
pub(crate) const MAX_SCANNED: usize = 65_536;
/// Fresh member files considered per read, at most.
const MAX_FRESH: usize = 4096;
/// Other members' files read per read, at most (the lowest pids).
pub(crate) const MAX_MEMBERS: usize = 256;
/// Devices (and device samples) taken from one member's file, at most: more GPUs than one host
/// has, and a bound on the series one file can add.
pub(crate) const MAX_DEVICES: usize = 64;

/// This process's place in a group.
pub(crate) struct Group {
    dir: PathBuf,
    pid: u32,
    // Declared before the lock, so dropped first: the note goes before the fd is closed.
    _close_in_child: CloseInChild,
    lock: Lead,
}

enum Lead {
    Following(File),
    /// Holding the lock, which lives as long as this.
    Serving(#[allow(dead_code)] Flock<File>),
    /// Between the two, while a lock call has the file.
    Moving,
}

/// The group dir's name for `addr`: by its port, so that every spelling of the port's address
/// (`localhost:P`, `127.0.0.1:P`, `0.0.0.0:P`, which could not all be bound at once anyway)
/// is one group; an address without a port, by its letters, digits, `.`, `-`, the rest `_`.
fn dir_name(addr: &str) -> String {
    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
        return format!("prometheus-{port}");
    }
    let clean: String = addr
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("prometheus-{clean}")
}

impl Group {
    /// Joins the group of `addr` in `runtime_dir` (both created if missing, and checked).
    pub(crate) fn join(runtime_dir: &Path, addr: &str) -> Result<Group, String> {
        prepare_runtime_dir(runtime_dir)?;
        let dir = runtime_dir.join(dir_name(addr));
        prepare_runtime_dir(&dir)?;
        let path = dir.join("serve.lock");
        let file = open_shared_file(&path)
            .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
        Ok(Group {
            // A forked child must not share (and keep alive) this process's lock.
            _close_in_child: fork_closed::close_in_child(file.as_raw_fd()),
            dir,
            pid: std::process::id(),
            lock: Lead::Following(file),
        })
    }

    /// Whether this process holds the lock: takes it if free.
    pub(crate) fn try_serve(&mut self) -> bool {
        if let Lead::Following(_) = self.lock {
            let Lead::Following(file) = std::mem::replace(&mut self.lock, Lead::Moving) else {
                unreachable!("matched above");
            };
            self.lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => Lead::Serving(held),
                Err((file, Errno::EWOULDBLOCK | Errno::EINTR)) => Lead::Following(file),
                Err((file, _)) => Lead::Following(file),
            };
        }
        matches!(self.lock, Lead::Serving(_))
    }

    fn own_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.pid))
    }

    /// Writes `snapshot` as this process's file.
    pub(crate) fn publish(&self, snapshot: &MetricsSnapshot) -> std::io::Result<()> {
        let published = PublishedMetrics {
            schema_version: SCHEMA_VERSION,
            published_at: unix_now(),
            snapshot: snapshot.clone(),
        };
        let bytes = serde_json::to_vec(&published).map_err(std::io::Error::other)?;
        if bytes.len() as u64 > PublishedMetrics::MAX_BYTES {
            return Err(std::io::Error::other(
                "the figures are too large to publish",
            ));
        }
        let temporary = self.dir.join(format!("{}.json.tmp", self.pid));
        let open = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&temporary)
        };
        let mut file = match open() {
            // The group dir was removed under us (a cleaner, a logout): made again, checked.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                prepare_runtime_dir(&self.dir).map_err(std::io::Error::other)?;
                open()?
            }
            other => other?,
        };
        file.write_all(&bytes)?;
        drop(file);
        fs::rename(&temporary, self.own_path())
    }

    /// The other members' figures: of the files rewritten within `expiry`, those of the
    /// [`MAX_MEMBERS`] lowest pids (a stable set, should there be more), ordered by pid, and
    /// whether there were more. Older files, and files dated more than `expiry` ahead (a clock
    /// set back), are skipped and, by the server, removed.
    pub(crate) fn others(&self, expiry: Duration) -> (Vec<MetricsSnapshot>, bool) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (Vec::new(), false);
        };
        let serving = matches!(self.lock, Lead::Serving(_));
        let now = SystemTime::now();
        let mut fresh: Vec<(u32, PathBuf)> = Vec::new();
        for entry in entries.take(MAX_SCANNED).flatten() {
            let name = entry.file_name();
            let Some((pid, temporary)) = name.to_str().and_then(member_name) else {
                continue;
            };
            if pid == self.pid {
                continue;
            }
            let path = entry.path();
            let Ok(modified) = fs::symlink_metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            let age = match now.duration_since(modified) {
                Ok(age) => age,
                Err(ahead) => ahead.duration(),
            };
            if age > expiry {
                if serving {
                    let _ = fs::remove_file(&path);
                }
            } else if !temporary && fresh.len() < MAX_FRESH {
                fresh.push((pid, path));
            }
        }
        fresh.sort_unstable_by_key(|(pid, _)| *pid);
        let more = fresh.len() > MAX_MEMBERS;
        fresh.truncate(MAX_MEMBERS);
        let snapshots = fresh
            .iter()
            .filter_map(|(pid, path)| read_member(path, *pid))
            .collect();
        (snapshots, more)
    }
}

/// The pid a member file's name says, and whether it is a file still being written:
/// `<pid>.json` or `<pid>.json.tmp`, the pid in decimal without a sign or leading zero.
fn member_name(name: &str) -> Option<(u32, bool)> {
    let (stem, temporary) = match name.strip_suffix(".json.tmp") {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".json")?, false),
    };
    if stem.starts_with(['+', '0']) {
        return None;
    }
    Some((stem.parse().ok()?, temporary))
}

impl Drop for Group {
    /// A member that stops (profiling turned off) takes its series away at once.
    fn drop(&mut self) {
        let _ = fs::remove_file(self.own_path());
    }
}

/// One member's file, if it is one: see the module comment for what is checked.
fn read_member(path: &Path, pid: u32) -> Option<MetricsSnapshot> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != uid || meta.len() > PublishedMetrics::MAX_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(PublishedMetrics::MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > PublishedMetrics::MAX_BYTES {
        return None;
    }
    let published: PublishedMetrics = serde_json::from_slice(&bytes).ok()?;
    if published.schema_version != SCHEMA_VERSION || published.snapshot.pid != pid {
        return None;
    }
    Some(sanitized(published.snapshot))
}

/// What another process's figures may hold, whatever its file said: at most [`MAX_DEVICES`]
/// devices and samples, each device once, and a step-duration sum that is a finite number of
/// seconds, not negative (a counter's).
fn sanitized(mut snapshot: MetricsSnapshot) -> MetricsSnapshot {
    let mut seen = std::collections::BTreeSet::new();
    snapshot.devices.retain(|d| seen.insert(d.index));
    snapshot.devices.truncate(MAX_DEVICES);
    let mut seen = std::collections::BTreeSet::new();
    snapshot.latest_samples.retain(|s| seen.insert(s.device_id));
    snapshot.latest_samples.truncate(MAX_DEVICES);
    if !(snapshot.step_seconds_sum.is_finite() && snapshot.step_seconds_sum >= 0.0) {
        snapshot.step_seconds_sum = 0.0;
    }
    snapshot
}

#[cfg(test)]
mod tests;
