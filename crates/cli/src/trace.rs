//! `vllm-profiler trace DIR -o run.json`: the traces of every process of one server run merged
//! into one Chrome trace.
//!
//! - One clock: every `ts` is Unix time in microseconds (each process's `otherData.started_unix`,
//!   its CLOCK_REALTIME at start, plus the event's offset), so the file lines up with other
//!   traces on the wall clock (a torch-profiler trace, an Nsight export). Doubles keep a
//!   quarter of a microsecond at today's Unix times.
//! - Each process is named by its role and rank (`engine_core`, `worker rank 0`), sorted by
//!   role; its executable's name is a label.
//! - Each device's GPU counters appear once, on a process of their own (pid 0, "GPUs"), from
//!   the process of the run that sampled the device most; one figure per counter track.
//! - The steps and spans of each thread nest as in the per-process traces (pids differ, so
//!   merging moves nothing between threads).
//!
//! Killed processes are in it: the command recovers their reports from the crash-safe journal
//! first, as `report` does.

use std::collections::BTreeMap;
use std::path::Path;

use vllm_profiler_format::{self as format, GpuHistory, TraceArg, TraceEvent, TraceFile};

use crate::input::read_json;
use crate::runs;

/// The pid the GPU counters are drawn on: no process has it.
pub const GPU_PID: u32 = 0;

/// What `merge` made, and what it left out.
pub struct Merged {
    pub trace: TraceFile,
    pub run_id: String,
    pub processes: usize,
    /// One line per process left out, and per other run of the dir.
    pub notes: Vec<String>,
}

/// Merges the traces of run `run_id` of `dir` (of its latest run when `None`).
pub fn merge(dir: &Path, run_id: Option<&str>) -> Result<Merged, String> {
    let mut all = runs::load(dir)?;
    let mut notes = Vec::new();
    let index = match run_id {
        Some(id) => all.iter().position(|r| r.run_id == id).ok_or_else(|| {
            let ids: Vec<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
            format!(
                "no run {id} in {} (runs: {})",
                dir.display(),
                ids.join(", ")
            )
        })?,
        None => all.len() - 1,
    };
    let run = all.remove(index);
    if run_id.is_none() && !all.is_empty() {
        let ids: Vec<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
        notes.push(format!(
            "{} holds other runs too ({}); merged the latest, {} (--run ID picks one)",
            dir.display(),
            ids.join(", "),
            run.run_id
        ));
    }
    let mut events = Vec::new();
    let mut started = f64::INFINITY;
    let mut processes = 0;
    let mut histories: Vec<GpuHistory> = Vec::new();
    for (order, summary) in run.members.iter().enumerate() {
        let pid = summary.pid;
        let trace: TraceFile = match read_json(&dir.join(format::trace_file_name(pid))) {
            Ok(trace) => trace,
            Err(err) => {
                notes.push(format!("pid {pid} left out: {err}"));
                continue;
            }
        };
        let Some(start) = started_unix(&trace).or(summary.started_unix) else {
            notes.push(format!("pid {pid} left out: its trace has no start time"));
            continue;
        };
        started = started.min(start);
        processes += 1;
        events.extend(process_events(trace, summary, order, start));
        if let Ok(history) = read_json(&dir.join(format::gpu_history_file_name(pid))) {
            histories.push(history);
        }
    }
    if processes == 0 {
        return Err(format!("no trace of run {} could be read", run.run_id));
    }
    events.extend(gpu_events(&histories));
    Ok(Merged {
        trace: TraceFile {
            trace_events: events,
            display_time_unit: "ms".to_owned(),
            other_data: BTreeMap::from([
                (
                    TraceFile::RUN_ID.to_owned(),
                    TraceArg::Text(run.run_id.clone()),
                ),
                (
                    TraceFile::STARTED_UNIX.to_owned(),
                    TraceArg::Number(started),
                ),
                ("clock".to_owned(), TraceArg::Text("unix_us".to_owned())),
                ("processes".to_owned(), TraceArg::Count(processes as u64)),
            ]),
        },
        run_id: run.run_id,
        processes,
        notes,
    })
}

fn started_unix(trace: &TraceFile) -> Option<f64> {
    match trace.other_data.get(TraceFile::STARTED_UNIX)? {
        TraceArg::Number(n) => Some(*n),
        TraceArg::Count(n) => Some(*n as f64),
        TraceArg::Text(_) => None,
    }
    .filter(|n| n.is_finite())
}

fn metadata(pid: u32, kind: &str, key: &'static str, value: TraceArg) -> TraceEvent {
    TraceEvent::metadata(pid, 0, kind, key, value)
}

/// One process's events on the Unix clock: its steps and spans, its threads' names, its name
/// (its role; the summary's, whatever the trace said) and its place.
fn process_events(
    trace: TraceFile,
    summary: &format::PerformanceSummary,
    order: usize,
    start: f64,
) -> Vec<TraceEvent> {
    let pid = summary.pid;
    let offset_us = start * 1e6;
    let mut events = vec![
        metadata(
            pid,
            "process_name",
            "name",
            TraceArg::Text(runs::label(summary)),
        ),
        metadata(
            pid,
            "process_sort_index",
            "sort_index",
            TraceArg::Count(order as u64 + 1),
        ),
    ];
    for mut event in trace.trace_events {
        match event.ph.as_ref() {
            "M" if event.name == "process_name" => continue,
            "M" => {}
            "X" => event.ts += offset_us,
            // GPU counters: drawn once per device below.
            _ => continue,
        }
        event.pid = pid;
        events.push(event);
    }
    events
}

/// A device across processes: its UUID, else its index.
type DeviceKey = (Option<String>, u32);

/// Each device's counters once: from the history with the most samples of it (devices known
/// by their UUID, else by their index).
fn gpu_events(histories: &[GpuHistory]) -> Vec<TraceEvent> {
    let mut chosen: Vec<(DeviceKey, &GpuHistory, usize)> = Vec::new();
    for history in histories {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for sample in &history.gpu_history {
            *counts.entry(sample.device_id).or_default() += 1;
        }
        for (device_id, count) in counts {
            let uuid = history
                .devices
                .iter()
                .find(|d| d.index == device_id)
                .and_then(|d| d.uuid.clone());
            let key = match uuid {
                Some(uuid) => (Some(uuid), 0),
                None => (None, device_id),
            };
            match chosen.iter_mut().find(|(k, ..)| *k == key) {
                Some(kept) if kept.2 >= count => {}
                Some(kept) => *kept = (key, history, count),
                None => chosen.push((key, history, count)),
            }
        }
    }
    let mut events = Vec::new();
    if chosen.is_empty() {
        return events;
    }
    events.push(metadata(
        GPU_PID,
        "process_name",
        "name",
        TraceArg::Text("GPUs".to_owned()),
    ));
    for ((uuid, index), history, _) in &chosen {
        for sample in &history.gpu_history {
            let this = history
                .devices
                .iter()
                .find(|d| d.index == sample.device_id)
                .and_then(|d| d.uuid.as_ref());
            let same = match uuid {
                Some(uuid) => this == Some(uuid),
                None => this.is_none() && sample.device_id == *index,
            };
            if same && sample.timestamp.is_finite() {
                let ts = sample.timestamp * 1e6;
                events.extend(format::gpu_counter_events(GPU_PID, ts, sample));
            }
        }
    }
    events
}
