//! The crash-safe journal of one process: what its collector drains, appended to the output dir
//! as it goes, so that the reports of a process killed without warning (vLLM SIGKILLs its engine
//! at shutdown) can be written afterwards from it (`vllm-profiler recover`).
//!
//! Files per process, beside its reports:
//! - `journal_<pid>.lock`: held (`flock`) by the writing process for as long as it journals,
//!   so that a reader can tell a running writer from a dead one, whatever pid namespace either
//!   is in; the kernel lets go of it when the writer dies, even by SIGKILL;
//! - `journal_<pid>.snapshot`: the whole session at one moment, generation G, replaced
//!   atomically (a temporary file, then a rename);
//! - `journal_<pid>.log`: what came after that moment: a header frame naming G, then one batch
//!   frame per collector turn. A frame is `[length: u32 LE][CRC-32: u32 LE][postcard bytes]`;
//!   a torn, damaged or empty frame ends the log there.
//!
//! Compaction (once the log passed [`LOG_LIMIT_BYTES`]) never stops the collector: the state is
//! taken at one turn, a new log `journal_<pid>.log.next` of G+1 starts empty, and while the
//! snapshot of G+1 is written on another thread every batch goes to both logs, so the old pair
//! stays whole. Once the new snapshot is in place the new log is renamed over the old. A reader
//! takes the log whose generation is the snapshot's: the old one, `.log.next` between the two
//! renames, the new one after.
//!
//! This module owns the files and their framing; what goes in them is `crate::journal_state`'s.
//! Its parts: `files` (names, opening, the lock), `writer` (which process wrote one), `store`
//! (the writing side), `read` (claiming and reading one back).

use std::time::Duration;

mod files;
mod read;
mod store;
mod writer;

pub use files::{
    forget_inherited_lock, list, lock_file_name, log_file_name, next_log_file_name,
    snapshot_file_name, LogHeader,
};
pub use read::{claim, open_log, open_snapshot, Claim, Claimed, LogReader};
pub use store::{Journal, Need, SnapshotJob, SnapshotWriter};
pub use writer::Writer;

/// Bumped whenever what the journal holds changes; a journal of another version is refused.
pub const JOURNAL_VERSION: u32 = 5;
/// The log is compacted into a new snapshot once this much was appended since the last one, so
/// that a journal holds at most one snapshot (bounded by the histories) and this much more.
pub const LOG_LIMIT_BYTES: u64 = 32 << 20;
/// Largest frame a reader accepts; a larger length is damage, never an allocation.
pub const MAX_FRAME_BYTES: u32 = 256 << 20;
/// After a failed write, the next try waits this long (an unwritable dir must not cost a
/// snapshot every turn).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long the final export waits for a snapshot being written before it removes the files.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
