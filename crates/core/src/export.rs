//! Atomic report writes: a temporary file in the same directory, then a rename.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

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
    let result = (|| {
        let mut file = create_temp(dir, name, &mut temp_path)?;
        write(&mut file)?;
        drop(file);
        fs::rename(&temp_path, &final_path)
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

/// Creates a new temporary `.{name}.{pid}.{counter}.tmp` in `dir` (its path left in `path`):
/// never through a symlink, never an existing file; a name taken is skipped for the next one.
fn create_temp(dir: &Path, name: &str, path: &mut PathBuf) -> io::Result<fs::File> {
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
            Ok(file) => return Ok(file),
        }
    }
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
}
