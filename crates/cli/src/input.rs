//! Reading a report file, which may be anything a directory can hold: a FIFO (opening it
//! would wait for a writer), a device such as `/dev/zero` (reading it never ends), a file of
//! gigabytes. Only a regular file of at most `MAX_REPORT_BYTES` is read, and opening never
//! waits.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest report file read: far above what the agent writes for its default history
/// (10 k steps), and a bound on what one file can cost the CLI.
pub const MAX_REPORT_BYTES: u64 = 256 << 20;

/// The report at `path`, parsed, or a one-line error saying why not.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = read_report(path)?;
    serde_json::from_slice(&bytes).map_err(|err| {
        format!(
            "{} is not a report vllm-profiler wrote: {err}",
            path.display()
        )
    })
}

/// The bytes of the report file at `path`, or a one-line error saying why not.
pub fn read_report(path: &Path) -> Result<Vec<u8>, String> {
    read_bounded(path, MAX_REPORT_BYTES)
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    // The type first, without opening (opening a device or a FIFO has effects of its own);
    // a symlink to a regular file is followed.
    let kind = std::fs::metadata(path).map_err(|err| format!("cannot read {shown}: {err}"))?;
    if !kind.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    // O_NONBLOCK: should the name be swapped for a FIFO meanwhile, opening it returns at once
    // instead of waiting for a writer (a regular file ignores the flag).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| format!("cannot read {shown}: {err}"))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read {shown}: {err}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let too_big = || format!("{shown} is larger than {limit} bytes, the most a report may have");
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the limit too.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {shown}: {err}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_within_the_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(read_bounded(&path, 2).unwrap(), b"{}");
        assert_eq!(
            read_bounded(&path, 1).unwrap_err(),
            format!(
                "{} is larger than 1 bytes, the most a report may have",
                path.display()
            )
        );
    }
}
