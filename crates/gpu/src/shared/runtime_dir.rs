//! Where the host's profiled processes share samples: the runtime dir, checked before use,
//! and its lock and sample files, named after the device's UUID and never opened through a
//! symlink.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// The runtime dir used when none is configured: `$XDG_RUNTIME_DIR/vllm-profiler` (per user,
/// in memory) when set, else `/tmp/vllm-profiler-<uid>`.
pub fn default_runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("vllm-profiler"),
        None => {
            std::env::temp_dir().join(format!("vllm-profiler-{}", nix::unistd::geteuid().as_raw()))
        }
    }
}

/// Creates `dir` (mode 0700) if missing and checks that it is safe to share samples through:
/// a real directory (not a symlink), owned by this user, that nobody else can write to.
pub fn prepare_runtime_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) => return Err(format!("cannot create {shown}: {err}")),
    }
    let meta = fs::symlink_metadata(dir).map_err(|err| format!("cannot stat {shown}: {err}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "{shown} belongs to uid {}, not to this user ({uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} is writable by other users (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Keeps letters, digits, `-`, `_` and `.` of a UUID, so that it is one safe file name.
pub(super) fn file_stem(detector: &str, uuid: &str) -> Option<String> {
    let clean: String = uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    (!clean.is_empty()).then(|| format!("{}-{clean}", detector.to_ascii_lowercase()))
}

/// Opens (creating, mode 0600) a lock or sample file of the runtime dir, never through a
/// symlink.
pub fn open_shared_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}
