//! Which process wrote a journal, and whether it still runs.

use std::fs;

use serde::{Deserialize, Serialize};

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

pub(super) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// The state (field 3) and start time (field 22) of `/proc/<pid>/stat`, read after the last
/// `)` (the process name before it may hold anything).
pub(super) fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    // The state is field 3, so the start time (22) is 19 further on.
    Some((state, fields.nth(18)?.parse().ok()?))
}
