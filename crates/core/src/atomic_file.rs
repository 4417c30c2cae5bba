//! Atomic report writes: a temporary file in the same directory, then a rename. A writer
//! holds an `flock` on its temporary until the rename, so a temporary whose lock is free was
//! left by a writer that no longer exists (killed while it wrote, in any pid namespace), and
//! an export removes such leftovers from its dir.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg, OFlag};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `value` as JSON to `dir/name` atomically (see `write_atomic_with`), streaming: a large
/// report is never held in memory whole.
pub fn write_json_atomic(
    dir: &Path,
    name: &str,
    value: &impl serde::Serialize,
) -> io::Result<PathBuf> {
    write_atomic_with(dir, name, |file| {
        let mut out = BufWriter::with_capacity(1 << 16, file);
        serde_json::to_writer(&mut out, value).map_err(io::Error::other)?;
        out.flush()
    })
}

/// Writes `bytes` to `dir/name` atomically (see `write_atomic_with`).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    write_atomic_with(dir, name, |file| file.write_all(bytes))
}

/// Writes `dir/name` through `write` so that a reader sees either the old file or the whole new
/// one: a temporary file in the same directory, then a rename. Creates `dir` if missing. The
/// temporary file is created new (never through a symlink), with mode 0644 before the umask; a
/// symlink planted at the final name is replaced, not followed.
pub fn write_atomic_with(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<PathBuf> {
    create_output_dir(dir)?;
    let final_path = dir.join(name);
    let mut temp_path = PathBuf::new();
    let result = (|| -> io::Result<()> {
        let mut file = create_temp(dir, name, &mut temp_path)?;
        write(&mut file)?;
        // Renamed with its lock held: a cleaner never takes a temporary being written.
        fs::rename(&temp_path, &final_path)?;
        drop(file);
        Ok(())
    })();
    if let Err(err) = result {
        if !temp_path.as_os_str().is_empty() {
            let _ = fs::remove_file(&temp_path);
        }
        return Err(io::Error::new(
            err.kind(),
            format!("{}: {err}", final_path.display()),
        ));
    }
    Ok(final_path)
}

/// Creates the output dir `dir` if missing; the error names it and says why.
pub fn create_output_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir).map_err(|err| {
        // create_dir_all says "File exists" of a file in the dir's place.
        let reason = match err.kind() {
            io::ErrorKind::AlreadyExists => "it exists and is not a directory".to_owned(),
            _ => err.to_string(),
        };
        io::Error::new(
            err.kind(),
            format!("cannot create output dir {}: {reason}", dir.display()),
        )
    })
}

/// Temporaries tried before giving up when their names are taken (by leftovers of a process
/// with a reused pid, or by files planted there).
const TEMP_TRIES: u32 = 100;

/// Creates a new temporary `.{name}.{pid}.{counter}.tmp` in `dir` (its path left in `path`),
/// locked: never through a symlink, never an existing file; a name taken is skipped for the
/// next one.
fn create_temp(dir: &Path, name: &str, path: &mut PathBuf) -> io::Result<Flock<fs::File>> {
    let mut tries = 0;
    loop {
        *path = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&*path);
        match created {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && tries + 1 < TEMP_TRIES => {
                tries += 1;
            }
            Err(err) => {
                // Nothing was created: whatever is at that name is not ours to remove.
                *path = PathBuf::new();
                return Err(err);
            }
            Ok(file) => {
                // A new file nobody else has open: the lock is free.
                return Flock::lock(file, FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, errno)| io::Error::from(errno));
            }
        }
    }
}

/// A temporary younger than this is left alone even when its lock is free: its writer may be
/// between creating it and locking it.
const TEMP_GRACE: Duration = Duration::from_secs(2);
/// Most entries of a dir looked at for leftovers in one pass.
const TEMP_SCAN_LIMIT: usize = 100_000;
/// How often, at most, a process looks for leftovers (Unix seconds of the last look).
const TEMP_SCAN_PERIOD_S: u64 = 60;
static LAST_TEMP_SCAN_S: AtomicU64 = AtomicU64::new(0);

/// Removes leftovers from `dir` (see [`remove_dead_temporaries`]) if this process has not
/// looked in the last minute: at its first export, and now and then after.
pub fn remove_dead_temporaries_now_and_then(dir: &Path) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_TEMP_SCAN_S.load(Ordering::Relaxed);
    if now.saturating_sub(last) < TEMP_SCAN_PERIOD_S && last != 0 {
        return;
    }
    if LAST_TEMP_SCAN_S
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        remove_dead_temporaries(dir);
    }
}

/// Removes the temporaries in `dir` that no writer holds (their lock is free) and that are
/// older than a moment: what processes killed while they wrote left. Only names this module
/// makes for the agent's files are looked at; anything else stays. Returns how many went.
pub fn remove_dead_temporaries(dir: &Path) -> usize {
    remove_temporaries(dir, None, TEMP_GRACE)
}

/// Removes the temporaries in `dir` written by process `pid` whose lock is free, however new:
/// for `recover`, which holds that process's journal and so knows it dead (a new temporary
/// of a live writer is locked from its creation, but for a moment; a dead one's never will).
pub fn remove_temporaries_of(dir: &Path, pid: u32) -> usize {
    remove_temporaries(dir, Some(pid), Duration::ZERO)
}

fn remove_temporaries(dir: &Path, writer: Option<u32>, grace: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten().take(TEMP_SCAN_LIMIT) {
        let name = entry.file_name();
        // The type without opening it (a FIFO's or a device's open has effects), from the
        // entry itself (a symlink is a symlink).
        let ours = name.to_str().is_some_and(|name| {
            is_agent_temporary(name) && writer.is_none_or(|pid| temporary_writer(name) == Some(pid))
        });
        if !ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open(&path)
        else {
            continue;
        };
        let old_enough = file.metadata().is_ok_and(|meta| {
            meta.is_file()
                && meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= grace)
        });
        if !old_enough {
            continue;
        }
        // Held: its writer is alive.
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The writer's pid in a temporary's name `.{name}.{pid}.{counter}.tmp`.
fn temporary_writer(file: &str) -> Option<u32> {
    let inner = file.strip_prefix('.')?.strip_suffix(".tmp")?;
    inner.rsplit('.').nth(1)?.parse().ok()
}

/// `.{name}.{pid}.{counter}.tmp` where `name` is one of the agent's report or journal files.
fn is_agent_temporary(file: &str) -> bool {
    let Some(inner) = file.strip_prefix('.').and_then(|f| f.strip_suffix(".tmp")) else {
        return false;
    };
    let mut parts = inner.rsplitn(3, '.');
    let (Some(counter), Some(pid), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(counter) || !digits(pid) {
        return false;
    }
    let numbered = |prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(digits)
    };
    [
        "performance_summary_",
        "detailed_steps_",
        "gpu_history_",
        "trace_",
    ]
    .iter()
    .any(|prefix| numbered(prefix, ".json"))
        || numbered("journal_", ".snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_dir_and_replaces_the_file_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let path = write_atomic(&dir, "x.json", b"{\"v\":1}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"v\":1}");
        write_atomic(&dir, "x.json", b"{\"v\":2}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"v\":2}");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("x.json")).unwrap();
        write_atomic(tmp.path(), "x.json", b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert_eq!(fs::read(tmp.path().join("x.json")).unwrap(), b"new");
    }

    #[test]
    fn a_file_in_place_of_the_dir_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not_a_dir");
        fs::write(&file, b"").unwrap();
        let err = write_atomic(&file, "x.json", b"{}").unwrap_err();
        assert!(err.to_string().contains("not_a_dir"), "{err}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn planted_temporaries_are_skipped_never_followed_nor_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        let planted: Vec<PathBuf> = (next..next + 20)
            .map(|n| {
                let path = tmp
                    .path()
                    .join(format!(".x.json.{}.{n}.tmp", std::process::id()));
                std::os::unix::fs::symlink(&victim, &path).unwrap();
                path
            })
            .collect();
        write_atomic(tmp.path(), "x.json", b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(tmp.path().join("x.json")).unwrap(), b"new");
        assert!(fs::symlink_metadata(tmp.path().join("x.json"))
            .unwrap()
            .file_type()
            .is_file());
        for path in &planted {
            assert!(fs::symlink_metadata(path).unwrap().file_type().is_symlink());
        }
    }

    #[test]
    fn only_unlocked_old_temporaries_of_the_agent_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let old = SystemTime::now() - Duration::from_secs(60);
        let make = |name: &str, aged: bool| {
            let path = dir.join(name);
            let file = fs::File::create(&path).unwrap();
            if aged {
                file.set_modified(old).unwrap();
            }
            (path, file)
        };
        let (dead, _) = make(".performance_summary_12.json.12.0.tmp", true);
        let (dead_snapshot, _) = make(".journal_7.snapshot.7.3.tmp", true);
        let (held, held_file) = make(".trace_13.json.13.1.tmp", true);
        let _writer = Flock::lock(held_file, FlockArg::LockExclusiveNonblock).unwrap();
        let (fresh, _) = make(".gpu_history_14.json.14.2.tmp", false);
        let (foreign, _) = make(".notes.txt.1.1.tmp", true);
        let (not_numbered, _) = make(".trace_x.json.1.1.tmp", true);
        // Named like ours but not a file: never opened (a FIFO's open would wake its writer).
        let fifo = dir.join(".trace_15.json.15.4.tmp");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let link = dir.join(".trace_16.json.16.5.tmp");
        std::os::unix::fs::symlink(&held, &link).unwrap();
        assert_eq!(remove_dead_temporaries(dir), 2);
        assert!(fifo.exists() && fs::symlink_metadata(&link).is_ok());
        assert!(!dead.exists() && !dead_snapshot.exists());
        for kept in [&held, &fresh, &foreign, &not_numbered] {
            assert!(kept.exists(), "{}", kept.display());
        }
        // A writer known dead (recover holds its journal): its temporaries go however new,
        // and only its own.
        assert_eq!(remove_temporaries_of(dir, 14), 1);
        assert!(!fresh.exists());
        assert_eq!(remove_temporaries_of(dir, 13), 0, "held: its writer lives");
        assert!(held.exists() && foreign.exists());
    }

    #[test]
    fn a_temporary_is_locked_until_its_rename() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic_with(tmp.path(), "trace_1.json", |file| {
            let temp = fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "tmp"))
                .unwrap();
            let other = fs::File::open(&temp).unwrap();
            assert!(
                Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err(),
                "held while written"
            );
            file.write_all(b"{}")
        })
        .unwrap();
        assert_eq!(fs::read(tmp.path().join("trace_1.json")).unwrap(), b"{}");
    }
}
