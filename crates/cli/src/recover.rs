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
    /// Its process still runs here: it writes its own reports.
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
    let recovered = match vllm_profiler_core::recover(dir, pid) {
        Ok(recovered) => recovered,
        Err(err) => return Recovery::Failed(err.to_string()),
    };
    if recovered.writer.is_running() && !force {
        return Recovery::Running;
    }
    let session = recovered.session;
    let steps = session.summary(None).map_or(0, |s| s.total_steps);
    match session.close_and_export(dir) {
        Ok(files) => {
            journal::remove(dir, pid);
            Recovery::Written {
                files: files.len(),
                steps,
                stopped: recovered.stopped,
            }
        }
        Err(err) => Recovery::Failed(err.to_string()),
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
