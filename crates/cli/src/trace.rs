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
            let ids = runs::some_ids(all.iter().map(|r| r.run_id.as_str()));
            format!("no run {id:?} in {} (runs: {ids})", dir.display())
        })?,
        None => all.len() - 1,
    };
    let run = all.remove(index);
    if run_id.is_none() && !all.is_empty() {
        let ids = runs::some_ids(all.iter().map(|r| r.run_id.as_str()));
        notes.push(format!(
            "{} holds other runs too ({ids}); merged the latest, {} (--run ID picks one)",
            dir.display(),
            run.run_id
        ));
    }
    let mut events = Vec::new();
    let mut started = f64::INFINITY;
    let mut processes = 0;
    let mut histories: Vec<GpuHistory> = Vec::new();
    let mut read_bytes = 0u64;
    for (order, summary) in run.members.iter().enumerate() {
        let pid = summary.pid;
        let path = dir.join(format::trace_file_name(pid));
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if read_bytes + size > MAX_TRACE_BYTES {
            notes.push(format!(
                "pid {pid} left out: the run's traces pass {} MiB, the most merged",
                MAX_TRACE_BYTES >> 20
            ));
            continue;
        }
        read_bytes += size;
        let trace: TraceFile = match read_json(&path) {
            Ok(trace) => trace,
            Err(err) => {
                notes.push(format!("pid {pid} left out: {err}"));
                continue;
            }
        };
        let Some(start) = started_unix(&trace)
            .or(summary.started_unix)
            .filter(|s| (0.0..=MAX_UNIX_S).contains(s))
        else {
            notes.push(format!(
                "pid {pid} left out: its trace has no start time on the Unix clock"
            ));
            continue;
        };
        started = started.min(start);
        processes += 1;
        let (process, dropped) = process_events(trace, summary, order, start);
        events.extend(process);
        if dropped > 0 {
            notes.push(format!(
                "pid {pid}: {dropped} event(s) without a time or a duration left out"
            ));
        }
        let history_path = dir.join(format::gpu_history_file_name(pid));
        if history_path.exists() {
            match read_json(&history_path) {
                Ok(history) => histories.push(history),
                Err(err) => notes.push(format!("pid {pid}: GPU counters left out: {err}")),
            }
        }
    }
    if processes == 0 {
        notes.insert(0, format!("no trace of run {} could be read", run.run_id));
        return Err(notes.join("\n"));
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

/// The traces of one run read at most, in all: the merge holds them in memory.
const MAX_TRACE_BYTES: u64 = 512 << 20;

/// The latest start time taken, Unix seconds (the year 5138): past it, microseconds lose
/// their precision in a double.
const MAX_UNIX_S: f64 = 1e11;

/// One process's events on the Unix clock: its steps and spans, its threads' names, its name
/// (its role; the summary's, whatever the trace said) and its place; and how many events had
/// no usable time or duration (left out).
///
/// An event's start and end are each moved to the Unix clock and its duration taken between
/// them: rounding is monotonic, so an event that ends within its parent still does, though a
/// double keeps only a quarter of a microsecond at today's Unix times.
fn process_events(
    trace: TraceFile,
    summary: &format::PerformanceSummary,
    order: usize,
    start: f64,
) -> (Vec<TraceEvent>, usize) {
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
    let mut dropped = 0;
    let mut spans = Vec::new();
    for mut event in trace.trace_events {
        if event.pid != pid {
            dropped += 1;
            continue;
        }
        match event.ph.as_ref() {
            "M" if matches!(event.name.as_str(), "thread_name" | "process_labels") => {
                event.ts = 0.0;
            }
            // Its name and place are the merge's.
            "M" => continue,
            "X" => {
                let dur = event.dur.unwrap_or(f64::NAN);
                let (begin, end) = (offset_us + event.ts, offset_us + (event.ts + dur));
                if !(event.ts >= 0.0 && dur >= 0.0 && end <= MAX_UNIX_S * 1e6) {
                    dropped += 1;
                    continue;
                }
                event.ts = begin;
                event.dur = Some(end - begin);
                spans.push(event);
                continue;
            }
            // GPU counters: drawn once per device below.
            _ => continue,
        }
        events.push(event);
    }
    nest(&mut spans);
    events.extend(spans);
    (events, dropped)
}

/// Makes the `X` events of each thread nest, as the agent writes them (a file may say
/// otherwise): sorted by thread and start (the longer first), an event that would end after
/// the one it starts in is cut at that end and marked `"clipped": 1`.
fn nest(spans: &mut [TraceEvent]) {
    let end = |e: &TraceEvent| e.ts + e.dur.unwrap_or(0.0);
    spans.sort_by(|a, b| {
        (a.tid, a.ts)
            .partial_cmp(&(b.tid, b.ts))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| end(b).total_cmp(&end(a)))
    });
    let mut open: Vec<(u32, f64)> = Vec::new();
    for span in spans.iter_mut() {
        while open
            .last()
            .is_some_and(|&(tid, e)| tid != span.tid || e <= span.ts)
        {
            open.pop();
        }
        if let Some(&(_, outer)) = open.last() {
            if end(span) > outer {
                span.dur = Some(outer - span.ts);
                span.args
                    .insert(std::borrow::Cow::Borrowed("clipped"), TraceArg::Count(1));
            }
        }
        open.push((span.tid, end(span)));
    }
}

/// A device one history sampled most: its UUID (if it has one), its index, the history, the
/// count of its samples there.
type Chosen<'a> = (Option<String>, u32, &'a GpuHistory, usize);

/// Each device's counters once: from the history with the most samples of it. Devices are
/// known by their UUID; one without (a process whose devices list is empty) is the device of
/// its index, unless a device with a UUID has that index. Tracks are named by index, with the
/// UUID where two devices share one (hosts or containers that number their GPUs alike).
fn gpu_events(histories: &[GpuHistory]) -> Vec<TraceEvent> {
    let uuid_of = |history: &GpuHistory, index: u32| {
        history
            .devices
            .iter()
            .find(|d| d.index == index)
            .and_then(|d| d.uuid.clone())
    };
    let mut chosen: Vec<Chosen> = Vec::new();
    for history in histories {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for sample in &history.gpu_history {
            *counts.entry(sample.device_id).or_default() += 1;
        }
        for (index, count) in counts {
            let uuid = uuid_of(history, index);
            let same = |c: &Chosen| match (&c.0, &uuid) {
                (Some(a), Some(b)) => a == b,
                (None, None) => c.1 == index,
                _ => false,
            };
            match chosen.iter_mut().find(|c| same(c)) {
                Some(kept) if kept.3 >= count => {}
                Some(kept) => *kept = (uuid, index, history, count),
                None => chosen.push((uuid, index, history, count)),
            }
        }
    }
    let with_uuid: Vec<u32> = chosen
        .iter()
        .filter(|c| c.0.is_some())
        .map(|c| c.1)
        .collect();
    chosen.retain(|c| c.0.is_some() || !with_uuid.contains(&c.1));
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
    for (uuid, index, history, _) in &chosen {
        let shared = chosen.iter().filter(|c| c.1 == *index).count() > 1;
        let label = match (uuid, shared) {
            (Some(uuid), true) => format!("GPU {index} {uuid}"),
            _ => format!("GPU {index}"),
        };
        for sample in history.gpu_history.iter().filter(|s| s.device_id == *index) {
            let ts = sample.timestamp * 1e6;
            if (0.0..=MAX_UNIX_S).contains(&sample.timestamp) {
                events.extend(format::gpu_counter_events(GPU_PID, ts, &label, sample));
            }
        }
    }
    events
}
