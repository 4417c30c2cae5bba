//! Writing a file the user named (`trace -o`, `report --html`).
//!
//! - A path under `/dev` or `/proc` (`/dev/stdout`, `/dev/fd/3`, `/dev/null`, a terminal) is
//!   opened as it is, for appending, and written into: never created or replaced, so that
//!   `-o /dev/stdout >> log` appends to the log as `>>` does, and a pipe gets the bytes.
//! - Anything else that exists and is not a regular file (a FIFO) is written into the same way.
//! - A regular file, or one that does not exist yet, is replaced atomically (a temporary file
//!   in its directory, then a rename), so that a reader never sees half of it; missing parent
//!   directories are made. A file the user may not write is refused, as the shell's `>` refuses
//!   it, and a replaced file keeps its permission bits.
//! - A symlink is followed to the file it names, which is treated as above: the link stays.
//! - A directory, or a path that ends in `/`, is refused.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// As many links as Linux follows (MAXSYMLINKS) before ELOOP.
const MAX_LINKS: usize = 40;

/// How a write landed: the "wrote" line of a file written in place (the terminal, a pipe)
/// goes to stderr, so that it does not end up inside the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Replaced,
    InPlace,
}

/// Where a write to `path` lands: its final symlinks followed (the directories above are left
/// as they are), except under `/dev` and `/proc`, whose links (`/dev/stdout` to
/// `/proc/self/fd/1` to `pipe:[…]`) name open files, not places.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(format!("{} names a directory, not a file", path.display()));
    }
    if in_place(path) {
        return Ok(path.to_path_buf());
    }
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current)
                    .map_err(|e| format!("cannot read the link {}: {e}", current.display()))?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
                if in_place(&current) {
                    return Ok(current);
                }
            }
            _ => return Ok(current),
        }
    }
    Err(format!(
        "{}: too many levels of symbolic links",
        path.display()
    ))
}

/// The directory `path` is in: its parent, `.` for a bare name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn in_place(path: &Path) -> bool {
    path.starts_with("/dev") || path.starts_with("/proc")
}

/// Writes what `write` produces to the file at `path` (already `resolve`d), as the module says.
pub fn write(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Written, String> {
    let shown = path.display();
    let failed = |e: io::Error| format!("cannot write {shown}: {e}");
    let meta = fs::metadata(path);
    match &meta {
        Ok(m) if m.is_dir() => return Err(format!("{shown} is a directory")),
        Ok(m) if in_place(path) || !m.is_file() => {
            // A FIFO waits here for its reader, as a shell's `>` does.
            let file = OpenOptions::new().append(true).open(path).map_err(failed)?;
            let mut out = BufWriter::with_capacity(1 << 16, file);
            write(&mut out).and_then(|()| out.flush()).map_err(failed)?;
            return Ok(Written::InPlace);
        }
        Err(e) if in_place(path) => return Err(format!("cannot write {shown}: {e}")),
        _ => {}
    }
    let mode = match &meta {
        Ok(existing) => {
            // The shell's test: may this user write the file? (Opening changes nothing.)
            OpenOptions::new().write(true).open(path).map_err(failed)?;
            Some(existing.permissions().mode() & 0o7777)
        }
        Err(_) => None,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{shown} names no file"))?;
    vllm_profiler_core::atomic_file::write_atomic_with(parent_dir(path), name, |file| {
        if let Some(mode) = mode {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        let mut out = BufWriter::with_capacity(1 << 16, file);
        write(&mut out)?;
        out.flush()
    })
    .map(|_| Written::Replaced)
    .map_err(failed)
}

/// An error when writing `output` would replace one of the run's own files (a report or a
/// journal in `dir`).
pub fn refuse_run_file(dir: &Path, output: &Path) -> Result<(), String> {
    let shown = output.display();
    let Some(name) = output.file_name().and_then(|n| n.to_str()) else {
        return Ok(()); // `write` says what is wrong with it
    };
    let ours = [
        "performance_summary_",
        "detailed_steps_",
        "gpu_history_",
        "trace_",
        "journal_",
    ];
    let same_dir = match (parent_dir(output).canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_dir && ours.iter().any(|prefix| name.starts_with(prefix)) {
        return Err(format!(
            "{shown} would replace one of the run's own files in {}: name another",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt};

    fn write_text(path: &Path, text: &str) -> Result<Written, String> {
        write(&resolve(path)?, |w| w.write_all(text.as_bytes()))
    }

    #[test]
    fn a_new_or_regular_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_text(&path, "one").unwrap();
        write_text(&path, "two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_symlink_is_followed_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        fs::write(&real, "old").unwrap();
        let link = dir.path().join("link.json");
        symlink("real.json", &link).unwrap();
        let chained = dir.path().join("chained.json");
        symlink(&link, &chained).unwrap();
        write_text(&chained, "new").unwrap();
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::symlink_metadata(&chained)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_dangling_symlink_makes_the_file_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.json");
        symlink("missing.json", &link).unwrap();
        write_text(&link, "made").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("missing.json")).unwrap(),
            "made"
        );
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        symlink("b", &a).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let err = write_text(&a, "x").unwrap_err();
        assert!(err.ends_with("too many levels of symbolic links"), "{err}");
    }

    #[test]
    fn forty_links_are_followed_as_the_kernel_does_and_forty_one_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let name = |i: usize| dir.path().join(format!("l{i}"));
        fs::write(dir.path().join("f"), "old").unwrap();
        symlink("f", name(0)).unwrap();
        for i in 1..=40 {
            symlink(format!("l{}", i - 1), name(i)).unwrap();
        }
        assert_eq!(write_text(&name(39), "new"), Ok(Written::Replaced));
        assert_eq!(fs::read_to_string(dir.path().join("f")).unwrap(), "new");
        let err = write_text(&name(40), "x").unwrap_err();
        assert!(err.ends_with("too many levels of symbolic links"), "{err}");
    }

    #[test]
    fn a_replaced_file_keeps_its_permission_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_text(&path, "new").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_path_ending_in_a_slash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain.json");
        fs::write(&file, "kept").unwrap();
        let err = write_text(Path::new(&format!("{}/", file.display())), "x").unwrap_err();
        assert!(err.ends_with("names a directory, not a file"), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "kept");
    }

    #[test]
    fn a_fifo_is_written_into_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
        };
        assert_eq!(write_text(&fifo, "through the pipe"), Ok(Written::InPlace));
        assert_eq!(reader.join().unwrap(), "through the pipe");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn a_device_is_written_into_not_replaced() {
        assert_eq!(
            write_text(Path::new("/dev/null"), "nothing"),
            Ok(Written::InPlace)
        );
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_text(dir.path(), "x").unwrap_err();
        assert_eq!(err, format!("{} is a directory", dir.path().display()));
    }
}
