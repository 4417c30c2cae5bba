//! `vllm-profiler recover DIR`: the reports of processes that ended without their final export
//! (vLLM SIGKILLs its engine at shutdown), written from the crash-safe journal each profiled
//! process keeps beside its reports (`vllm_profiler_core::journal`).

use std::path::Path;

use vllm_profiler_core::journal;

/// What became of one journal.
pub struct Outcome {
    pub pid: u32,
    pub what: Recovery,
}

pub enum Recovery {
    /// Its reports were written and the journal removed.
    Written {
        files: usize,
        steps: u64,
        /// Why the log was not read to its end (a torn last frame after a kill).
        stopped: Option<String>,
    },
    /// Its process still runs (it holds the journal's lock): it writes its own reports.
    Running,
    Failed(String),
}

/// Recovers every journal in `dir` whose process is not running (any, with `force`).
pub fn recover_dir(dir: &Path, force: bool) -> Result<Vec<Outcome>, String> {
    let pids = journal::list(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    Ok(pids
        .into_iter()
        .map(|pid| Outcome {
            pid,
            what: recover_one(dir, pid, force),
        })
        .collect())
}

fn recover_one(dir: &Path, pid: u32, force: bool) -> Recovery {
    // A journal is other processes' data: whatever it holds must cost at most its own line,
    // never the other journals of the dir (the rebuild checks what it reads; this is the
    // last guard).
    let attempt = std::panic::catch_unwind(|| {
        let Some(recovered) = vllm_profiler_core::recover(dir, pid, force)? else {
            return Ok(Recovery::Running);
        };
        let steps = recovered.session.summary(None).map_or(0, |s| s.total_steps);
        let files = recovered.session.close_and_export(dir)?;
        let stopped = recovered.stopped.clone();
        recovered.remove_journal();
        Ok(Recovery::Written {
            files: files.len(),
            steps,
            stopped,
        })
    });
    match attempt {
        Ok(Ok(recovery)) => recovery,
        Ok(Err(err)) => Recovery::Failed(describe_error(&err)),
        Err(_) => Recovery::Failed("an internal error (a bug) stopped its recovery".into()),
    }
}

fn describe_error(err: &vllm_profiler_core::ProfilerError) -> String {
    match err {
        // The report files could not be written.
        vllm_profiler_core::ProfilerError::Io(why) => {
            format!("its reports cannot be written: {why}")
        }
        other => other.to_string(),
    }
}

/// One line per journal, for people.
pub fn describe(outcome: &Outcome) -> String {
    let pid = outcome.pid;
    match &outcome.what {
        Recovery::Written {
            files,
            steps,
            stopped,
        } => {
            let tail = stopped
                .as_ref()
                .map_or_else(String::new, |why| format!("; its log ended in {why}"));
            format!("pid {pid}: wrote {files} reports ({steps} steps) from its journal{tail}")
        }
        Recovery::Running => {
            format!("pid {pid}: still running, left alone (it writes its own reports)")
        }
        Recovery::Failed(why) => format!("pid {pid}: not recovered: {why}"),
    }
}
