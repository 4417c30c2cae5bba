//! The agent's only output: warnings, one `vllm-profiler: ...` line each on stderr, each
//! distinct one once per process, and a failing output dir once per dir.
// write(2) is libc's: the Rust stderr lock may be held by the host at exit or across a fork.
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the process is dying by SIGTERM: nothing more is printed (the host's run without
/// us would print nothing either). Async-signal-safe to set.
static SILENT: AtomicBool = AtomicBool::new(false);

/// From a signal handler too: an atomic store.
pub(crate) fn set_silent(silent: bool) {
    SILENT.store(silent, Ordering::Release);
}

/// Hashes of the warnings printed so far: each distinct warning is printed once per process,
/// however often the threads that find it restart (every enable after a disable detects the
/// GPUs again).
static PRINTED: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// Whether `line` was not printed before (and is now recorded as printed). A lock held across
/// a fork, or a full table, lets it print again rather than wait or lose it.
fn first_time(line: &str) -> bool {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    line.hash(&mut hasher);
    let hash = hasher.finish();
    let Ok(mut printed) = PRINTED.try_lock() else {
        return true;
    };
    if printed.contains(&hash) {
        return false;
    }
    if printed.len() < 1024 {
        printed.push(hash);
    }
    true
}

/// Says a failure to write into the output dir `dir`: only the first one per dir (the journal's,
/// a periodic export's or the final export's) is printed, with a note that later ones are not,
/// so that an unusable dir is one line however often it is tried.
pub(crate) fn warn_output_dir(dir: Option<&Path>, line: String) {
    match dir {
        Some(dir) if first_time(&format!("output dir failure: {}", dir.display())) => {
            print_warnings(&[format!(
                "{line} (later failures to write into {} are not shown)",
                dir.display()
            )]);
        }
        Some(_) => {}
        None => print_warnings(&[line]),
    }
}

/// Writes each warning not printed before as one `vllm-profiler: ...` line to stderr (fd 2),
/// without the Rust stderr lock, so that it is usable from the constructor and exit hooks.
pub(crate) fn print_warnings(lines: &[String]) {
    if SILENT.load(Ordering::Acquire) {
        return;
    }
    for line in lines.iter().filter(|line| first_time(line)) {
        let text = format!("vllm-profiler: {line}\n");
        let mut bytes = text.as_bytes();
        while !bytes.is_empty() {
            // SAFETY: writes from a valid buffer of the given length to fd 2.
            let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
            if n <= 0 {
                break;
            }
            bytes = &bytes[n as usize..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_printed_once_per_process() {
        let line = format!("test warning {}", std::process::id());
        assert!(first_time(&line));
        assert!(!first_time(&line));
        assert!(first_time(&format!("{line} (another)")));
    }
}
