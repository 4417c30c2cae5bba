//! Recovery: a session rebuilt from the journal of a process that ended without its final
//! export (a kill), so that its reports can be written as it would have written them.

use std::sync::Arc;

use crate::error::{ProfilerError, Result};
use crate::journal::{self, Writer, JOURNAL_VERSION};
use crate::journal_state::{Batch, State};
use crate::session::Session;

/// A session rebuilt from the journal of a process that ended without its final export.
pub struct Recovered {
    pub session: Arc<Session>,
    /// The process that wrote the journal.
    pub writer: Writer,
    /// Batches of the log folded in after the snapshot.
    pub batches: usize,
    /// Why the log was not read to its end, if it was not (a torn last frame after a kill).
    pub stopped: Option<String>,
    /// The hold on the journal; `None` when forced over a writer that still runs.
    claim: Option<journal::Claim>,
}

impl Recovered {
    /// Removes the journal (once its reports are written), unless its writer still runs, and
    /// the temporaries its dead writer left, however new.
    pub fn remove_journal(self) {
        if let Some(claim) = self.claim {
            if claim.locked() {
                crate::atomic_file::remove_temporaries_of(claim.dir(), self.writer.pid);
            }
            claim.remove();
        }
    }
}

/// The journal could not be read: this is why, with its path.
fn unreadable(dir: &std::path::Path, pid: u32, why: impl std::fmt::Display) -> ProfilerError {
    ProfilerError::Journal(format!(
        "the journal {} cannot be read: {why}",
        dir.join(journal::snapshot_file_name(pid)).display()
    ))
}

/// Rebuilds the session of process `pid` from its journal in `dir`; export it with
/// `close_and_export` to write the reports it would have written, then remove the journal.
/// `Ok(None)` when its writer still runs (unless `force`: then the journal stays). Every id,
/// count and length read is checked: a damaged or hostile journal is an error, never a panic
/// or an allocation it declares.
pub fn recover(dir: &std::path::Path, pid: u32, force: bool) -> Result<Option<Recovered>> {
    let claim = match journal::claim(dir, pid).map_err(|err| unreadable(dir, pid, err))? {
        journal::Claimed::Claim(claim) => Some(claim),
        journal::Claimed::Running if force => None,
        journal::Claimed::Running => return Ok(None),
    };
    let snapshot = match journal::open_snapshot(dir, pid) {
        Ok(snapshot) => snapshot,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // Leftovers of a writer that died before its first snapshot landed: nothing to
            // recover; they go, so that they are said once.
            if let Some(claim) = claim.filter(journal::Claim::locked) {
                claim.remove();
            }
            return Err(unreadable(
                dir,
                pid,
                "there is no snapshot: nothing to recover (its other files were removed)",
            ));
        }
        Err(err) => return Err(unreadable(dir, pid, err)),
    };
    let mut scratch = vec![0; 1 << 16];
    let (state, _) = postcard::from_io::<State, _>((snapshot, &mut scratch))
        .map_err(|err| unreadable(dir, pid, format!("not a snapshot of this version ({err})")))?;
    if state.version != JOURNAL_VERSION || state.writer.pid != pid {
        return Err(unreadable(
            dir,
            pid,
            format!(
                "a snapshot of version {} by pid {}, not of version {JOURNAL_VERSION} by pid {pid}",
                state.version, state.writer.pid
            ),
        ));
    }
    state.check().map_err(|why| unreadable(dir, pid, why))?;
    let locked = claim.as_ref().is_some_and(journal::Claim::locked);
    if !locked && !force && state.writer.is_running() {
        return Ok(None); // no lock file to ask: the process table says it runs
    }
    let writer = state.writer.clone();
    let generation = state.generation;
    let (session, mut pending) =
        Session::restore(pid, state).map_err(|err| unreadable(dir, pid, err))?;
    let mut batches = 0;
    let mut stopped = None;
    let log = journal::open_log(dir, pid, generation).map_err(|err| unreadable(dir, pid, err))?;
    if let Some(mut log) = log {
        while let Some(frame) = log.next_frame() {
            let batch = frame.and_then(|bytes| {
                postcard::from_bytes::<Batch>(&bytes)
                    .map_err(|err| format!("a batch that does not decode ({err})"))
            });
            let applied = batch.and_then(|batch| {
                session.check(&batch).and_then(|()| {
                    session
                        .apply(batch, &mut pending)
                        .map_err(|e| e.to_string())
                })
            });
            if let Err(why) = applied {
                stopped = Some(why);
                break;
            }
            batches += 1;
        }
    }
    Ok(Some(Recovered {
        session,
        writer,
        batches,
        stopped,
        claim,
    }))
}
