//! Writing a file the user named (`trace -o`, `report --html`). A regular file, or one that does
//! not exist yet, is replaced atomically (a temporary file in its directory, then a rename), so
//! that a reader never sees half of it. A symlink is followed to the file it names, which is
//! replaced the same way: the link stays. Anything else that is not a directory (a FIFO,
//! `/dev/stdout`, a terminal, `/dev/null`) is written into as it is and never replaced.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// As many links as Linux follows (MAXSYMLINKS) before ELOOP.
const MAX_LINKS: usize = 40;

/// `path` with its final symlinks followed (the directories above are left as they are): the
/// file that a write to `path` lands in.
pub fn resolve(path: &Path) -> Result<PathBuf, String> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current)
                    .map_err(|e| format!("cannot read the link {}: {e}", current.display()))?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(format!(
        "{}: too many levels of symbolic links",
        path.display()
    ))
}

/// Writes what `write` produces to the file at `path` (already `resolve`d), as the module says.
pub fn write(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), String> {
    let shown = path.display();
    let failed = |e: io::Error| format!("cannot write {shown}: {e}");
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(format!("{shown} is a directory")),
        Ok(meta) if !meta.is_file() => {
            // A FIFO waits here for its reader, as a shell's `>` does.
            let file = OpenOptions::new().write(true).open(path).map_err(failed)?;
            let mut out = BufWriter::with_capacity(1 << 16, file);
            return write(&mut out).and_then(|()| out.flush()).map_err(failed);
        }
        _ => {}
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{shown} names no file"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    vllm_profiler_core::atomic_file::write_atomic_with(dir, name, |file| {
        let mut out = BufWriter::with_capacity(1 << 16, file);
        write(&mut out)?;
        out.flush()
    })
    .map(|_| ())
    .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt};

    fn write_text(path: &Path, text: &str) -> Result<(), String> {
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
        write_text(&fifo, "through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), "through the pipe");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn a_device_is_written_into_not_replaced() {
        write_text(Path::new("/dev/null"), "nothing").unwrap();
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
