//! The server runs in a report dir: its processes' summaries, grouped by run. Processes with
//! one run id are one run; a process whose parent is a process of the dir (started before it:
//! pids are reused) is in its parent's run too, for processes whose parent could not pass the
//! run id on (`VLLM_PROFILING_RUN_ID`). Within a run, processes go by role: the API server,
//! the engine core, the workers by rank, the others; then by pid.

use std::collections::HashMap;
use std::path::Path;

use vllm_profiler_format::{self as format, PerformanceSummary, Role};

use crate::input::read_json;

/// One run's processes.
pub struct Run {
    pub run_id: String,
    pub members: Vec<PerformanceSummary>,
}

/// The pids with a performance summary in `dir`, ascending; an error when there are none.
pub fn pids_in(dir: &Path) -> Result<Vec<u32>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| format::summary_pid(entry.file_name().to_str()?))
        .collect();
    pids.sort_unstable();
    if pids.is_empty() {
        return Err(format!(
            "no performance_summary_<pid>.json in {}",
            dir.display()
        ));
    }
    Ok(pids)
}

/// At most ten run ids, for a line that names them.
pub fn some_ids<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = ids.len();
    let mut shown: Vec<&str> = ids.take(10).collect();
    let more = format!("and {} more", n.saturating_sub(10));
    if n > 10 {
        shown.push(&more);
    }
    shown.join(", ")
}

/// A process's role as tables show it: `engine_core`, `worker rank 0`.
pub fn label(summary: &PerformanceSummary) -> String {
    match summary.rank {
        Some(rank) => format!("{} rank {rank}", summary.role.as_str()),
        None => summary.role.as_str().to_owned(),
    }
}

/// The order of processes within a run.
fn order(summary: &PerformanceSummary) -> (u8, u32, u32) {
    let role = match summary.role {
        Role::ApiServer => 0,
        Role::EngineCore => 1,
        Role::Worker => 2,
        Role::Process => 3,
    };
    (role, summary.rank.unwrap_or(0), summary.pid)
}

/// The runs of `dir`, the earliest first.
pub fn load(dir: &Path) -> Result<Vec<Run>, String> {
    let summaries = pids_in(dir)?
        .into_iter()
        .map(|pid| {
            let name = format::summary_file_name(pid);
            let mut summary: PerformanceSummary = read_json(&dir.join(&name))?;
            if summary.pid != pid || pid == 0 {
                return Err(format!(
                    "{} says pid {}, not {pid}: not a report vllm-profiler wrote",
                    dir.join(&name).display(),
                    summary.pid
                ));
            }
            // A run id the agent could not have written (1 to 64 letters, digits, `.`, `_`,
            // `-`, `:`) is no run id: it is never compared, hashed or printed at any length.
            if !summary.run_id.as_deref().is_some_and(format::is_run_id) {
                summary.run_id = None;
            }
            Ok(summary)
        })
        .collect::<Result<Vec<PerformanceSummary>, String>>()?;
    Ok(group(summaries))
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Groups `summaries` into runs (see the module comment).
pub fn group(summaries: Vec<PerformanceSummary>) -> Vec<Run> {
    let n = summaries.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let union = |parent: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    };
    // Linear in the processes: each joins the first process of its run id, and the processes
    // that the pid of its parent names (several, when a pid was reused: the ones that started
    // before it).
    let mut first_of_run: HashMap<&str, usize> = HashMap::new();
    let mut by_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, s) in summaries.iter().enumerate() {
        by_pid.entry(s.pid).or_default().push(i);
    }
    for (i, child) in summaries.iter().enumerate() {
        if let Some(run_id) = child.run_id.as_deref() {
            // A process with a run id is in that run only.
            let first = *first_of_run.entry(run_id).or_insert(i);
            union(&mut parent, i, first);
            continue;
        }
        let Some(parents) = child.parent_pid.and_then(|pid| by_pid.get(&pid)) else {
            continue;
        };
        for &j in parents {
            let started_it = j != i
                && match (child.started_unix, summaries[j].started_unix) {
                    (Some(child), Some(parent)) => parent <= child,
                    _ => true,
                };
            if started_it {
                union(&mut parent, i, j);
            }
        }
    }
    let mut runs: Vec<Vec<PerformanceSummary>> = Vec::new();
    let mut run_of_root: HashMap<usize, usize> = HashMap::new();
    for (i, summary) in summaries.into_iter().enumerate() {
        let root = find(&mut parent, i);
        let index = *run_of_root.entry(root).or_insert_with(|| {
            runs.push(Vec::new());
            runs.len() - 1
        });
        runs[index].push(summary);
    }
    let mut runs: Vec<Run> = runs
        .into_iter()
        .map(|mut members| {
            members.sort_by_key(order);
            let run_id = members
                .iter()
                .find_map(|m| m.run_id.clone())
                .unwrap_or_else(|| format!("pid-{}", members[0].pid));
            Run { run_id, members }
        })
        .collect();
    // A process without its start time (an older writer) counts from when it wrote its
    // summary.
    let start = |run: &Run| {
        run.members
            .iter()
            .map(|m| m.started_unix.unwrap_or(m.generated_at))
            .filter(|t| t.is_finite())
            .fold(f64::INFINITY, f64::min)
    };
    runs.sort_by(|a, b| start(a).total_cmp(&start(b)).then(a.run_id.cmp(&b.run_id)));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(
        pid: u32,
        role: Role,
        run: Option<&str>,
        parent: u32,
        start: f64,
    ) -> PerformanceSummary {
        let mut s: PerformanceSummary = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "pid": pid, "generated_at": 0.0, "total_steps": 0,
            "avg_duration_ms": null, "min_duration_ms": null, "max_duration_ms": null,
            "p50_duration_ms": null, "p90_duration_ms": null, "p99_duration_ms": null,
            "total_tokens": 0, "total_batch_size": 0, "tokens_per_second": null,
            "window_seconds": null, "avg_memory_mb": null, "max_memory_mb": null,
            "memory_source": "none", "layer_performance": {},
            "counters": {"kept_steps": 0, "dropped_steps": 0, "dropped_samples": 0,
                         "lost_events": 0, "auto_closed_spans": 0, "total_spans": 0}
        }))
        .unwrap();
        s.role = role;
        s.run_id = run.map(str::to_owned);
        s.parent_pid = Some(parent);
        s.started_unix = Some(start);
        s
    }

    fn shape(runs: &[Run]) -> Vec<(String, Vec<u32>)> {
        runs.iter()
            .map(|r| (r.run_id.clone(), r.members.iter().map(|m| m.pid).collect()))
            .collect()
    }

    #[test]
    fn two_runs_group_by_run_id_and_by_parent() {
        let runs = group(vec![
            process(30, Role::Worker, Some("b"), 29, 20.0),
            process(10, Role::EngineCore, Some("a"), 9, 2.0),
            process(9, Role::ApiServer, Some("a"), 1, 1.0),
            // No run id (its parent could not pass it on): in its parent's run.
            process(11, Role::Worker, None, 10, 3.0),
            process(29, Role::EngineCore, Some("b"), 28, 19.0),
            // Pid 29 started after it: a reused pid, not its parent.
            process(12, Role::Process, None, 29, 0.5),
            // Its parent's pid is in run a, but it has a run id of its own: in that run only.
            process(31, Role::ApiServer, Some("b"), 10, 18.0),
        ]);
        assert_eq!(
            shape(&runs),
            [
                ("pid-12".to_owned(), vec![12]),
                ("a".to_owned(), vec![9, 10, 11]),
                ("b".to_owned(), vec![31, 29, 30]),
            ]
        );
    }
}
