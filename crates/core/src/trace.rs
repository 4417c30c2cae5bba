//! `trace_<pid>.json` in the Chrome trace event format, for Perfetto and `chrome://tracing`:
//! steps and spans as `X` events on their real pid and thread id, GPU figures as `C` counter
//! tracks, and `M` events naming the process and its threads.
//!
//! Perfetto drops events that overlap on one thread, so the events of each thread are made to
//! nest: sorted by start (the longer first), an event that starts inside another but would end
//! after it is cut at the other's end and marked `"clipped": 1`. That happens only when a span
//! began before a step and ended inside it, or the other way round.
//!
//! Times are microseconds since the session started (`otherData.started_unix` is that start
//! in Unix seconds), with nanosecond resolution.

use std::borrow::Cow;

use vllm_profiler_format::{self as format, TraceArg, TraceEvent};

use crate::event::NO_GPU_TIME;
use crate::trace_interval::Interval;
use crate::trace_kernels::{kernel_interval, track_name, TraceKernel};
use crate::trace_torch_ops::{op_interval, track_name as torch_track_name};

/// Most spans the trace keeps (the newest); older ones are dropped and counted.
pub const MAX_TRACE_SPANS: usize = 65_536;

/// Spans the trace keeps with a step history of `max_history`: 64 per kept step, between
/// 1024 and [`MAX_TRACE_SPANS`], so that the trace covers about the steps the other reports
/// keep and an export stays proportionate to them.
pub fn span_capacity(max_history: usize) -> usize {
    max_history.saturating_mul(64).clamp(1024, MAX_TRACE_SPANS)
}

/// A finished span as the trace keeps it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct TraceSpan {
    pub thread_id: u32,
    pub name: crate::names::NameId,
    /// Its sequence number on its thread, by which a late device time finds it.
    pub seq: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Device time; `kept::NO_GPU_TIME` when none was set.
    pub gpu_ns: u64,
}

/// The finished spans and kernels a trace shows, beside its steps.
pub(crate) struct TraceRecords<'a> {
    pub spans: &'a [TraceSpan],
    /// Spans the bounded trace let go.
    pub dropped_spans: u64,
    pub kernels: &'a [TraceKernel],
    /// Op executions of the torch profiler's windows.
    pub torch_ops: &'a [crate::torch_ops::TraceOp],
}

/// A kept step, as the trace needs it.
pub(crate) struct TraceStep {
    pub thread_id: u32,
    pub step_id: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub batch_size: u32,
    pub num_tokens: u32,
    /// Device time; `kept::NO_GPU_TIME` when none was set.
    pub gpu_ns: u64,
}

/// The `gpu_ms` argument of an event with device time: its host duration is the event's own
/// length, so the device's is named apart.
fn gpu_arg(gpu_ns: u64) -> Option<(Cow<'static, str>, TraceArg)> {
    (gpu_ns != NO_GPU_TIME).then(|| {
        (
            Cow::Borrowed("gpu_ms"),
            TraceArg::Number(gpu_ns as f64 / 1e6),
        )
    })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Builds the trace of one process.
/// The process a trace is of.
pub(crate) struct TraceProcess {
    pub pid: u32,
    /// Unix seconds of `ts` 0.
    pub started_unix: f64,
    /// Its name as the trace shows it (`/proc/self/comm` when it is this process).
    pub name: String,
    pub role: format::Role,
    pub rank: Option<u32>,
    /// Whether this is the running process, whose threads' names can still be read.
    pub live: bool,
}

impl TraceProcess {
    /// The name of the calling process: its `comm` (vLLM sets it, `VLLM::EngineCore`).
    pub fn own_name() -> String {
        std::fs::read_to_string("/proc/self/comm")
            .map(|name| name.trim_end().to_owned())
            .unwrap_or_default()
    }
}

pub(crate) fn build(
    process: &TraceProcess,
    steps: &[TraceStep],
    records: &TraceRecords<'_>,
    names: &[std::sync::Arc<str>],
    gpu: Option<&format::GpuHistory>,
) -> format::TraceFile {
    let TraceRecords {
        spans,
        dropped_spans,
        kernels,
        torch_ops,
    } = *records;
    let capacity = steps.len() + spans.len() + kernels.len() + torch_ops.len();
    let mut intervals: Vec<Interval> = Vec::with_capacity(capacity);
    for step in steps {
        let number = TraceArg::Count;
        intervals.push(Interval {
            thread_id: step.thread_id,
            start_ns: step.start_ns,
            end_ns: step.start_ns.saturating_add(step.duration_ns),
            cat: "step",
            name: format!("step {}", step.step_id),
            args: [
                (Cow::Borrowed("step_id"), number(step.step_id)),
                (
                    Cow::Borrowed("batch_size"),
                    number(u64::from(step.batch_size)),
                ),
                (
                    Cow::Borrowed("num_tokens"),
                    number(u64::from(step.num_tokens)),
                ),
            ]
            .into_iter()
            .chain(gpu_arg(step.gpu_ns))
            .collect(),
        });
    }
    for span in spans {
        let name = names
            .get(span.name.0 as usize)
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        intervals.push(Interval {
            thread_id: span.thread_id,
            start_ns: span.start_ns,
            end_ns: span.start_ns.saturating_add(span.duration_ns),
            cat: "span",
            name,
            args: gpu_arg(span.gpu_ns).into_iter().collect(),
        });
    }
    intervals.extend(kernels.iter().map(|k| kernel_interval(k, names)));
    intervals.extend(torch_ops.iter().map(|op| op_interval(op, names)));
    // Per thread, outer first: earlier start, then later end, then a step before a span.
    intervals.sort_by(|a, b| {
        (
            a.thread_id,
            a.start_ns,
            std::cmp::Reverse(a.end_ns),
            a.cat != "step",
        )
            .cmp(&(
                b.thread_id,
                b.start_ns,
                std::cmp::Reverse(b.end_ns),
                b.cat != "step",
            ))
    });
    let pid = process.pid;
    let mut events = Vec::with_capacity(intervals.len() + 16);
    let label = match process.rank {
        Some(rank) => format!("{} rank {rank}", process.role.as_str()),
        None => process.role.as_str().to_owned(),
    };
    // Viewers show the pid beside the name: the name is the role, the executable's name a label.
    events.push(metadata(pid, 0, "process_name", label));
    if !process.name.is_empty() {
        events.push(metadata(pid, 0, "process_labels", process.name.clone()));
    }
    let mut thread = None;
    let mut open: Vec<u64> = Vec::new();
    for mut interval in intervals {
        if thread != Some(interval.thread_id) {
            thread = Some(interval.thread_id);
            open.clear();
            events.push(metadata(
                pid,
                interval.thread_id,
                "thread_name",
                track_name(interval.thread_id)
                    .or_else(|| torch_track_name(interval.thread_id))
                    .unwrap_or_else(|| thread_name(interval.thread_id, process.live)),
            ));
        }
        while open.last().is_some_and(|&end| end <= interval.start_ns) {
            open.pop();
        }
        if let Some(&outer_end) = open.last() {
            if interval.end_ns > outer_end {
                interval.end_ns = outer_end;
                interval
                    .args
                    .insert(Cow::Borrowed("clipped"), TraceArg::Count(1));
            }
        }
        open.push(interval.end_ns);
        events.push(TraceEvent {
            name: interval.name,
            cat: Some(Cow::Borrowed(interval.cat)),
            ph: Cow::Borrowed("X"),
            ts: us(interval.start_ns),
            dur: Some(us(interval.end_ns - interval.start_ns)),
            pid,
            tid: interval.thread_id,
            args: interval.args,
        });
    }
    if let Some(gpu) = gpu {
        for sample in &gpu.gpu_history {
            let ts = ((sample.timestamp - process.started_unix) * 1e6).max(0.0);
            let device = format!("GPU {}", sample.device_id);
            events.extend(format::gpu_counter_events(pid, ts, &device, sample));
        }
    }
    format::TraceFile {
        trace_events: events,
        display_time_unit: "ms".to_owned(),
        other_data: [
            (
                "started_unix".to_owned(),
                TraceArg::Number(process.started_unix),
            ),
            ("dropped_spans".to_owned(), TraceArg::Count(dropped_spans)),
            (
                "role".to_owned(),
                TraceArg::Text(process.role.as_str().to_owned()),
            ),
        ]
        .into_iter()
        .chain(
            process
                .rank
                .map(|rank| ("rank".to_owned(), TraceArg::Count(u64::from(rank)))),
        )
        .collect(),
    }
}

fn metadata(pid: u32, tid: u32, kind: &str, name: String) -> TraceEvent {
    TraceEvent::metadata(pid, tid, kind, "name", TraceArg::Text(name))
}

/// `/proc/self/task/<tid>/comm` while the thread lives (and the process is this one).
fn thread_name(tid: u32, live: bool) -> String {
    live.then(|| std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok())
        .flatten()
        .map(|name| name.trim_end().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("thread {tid}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::names::NameId;

    #[test]
    fn events_of_a_thread_nest_and_an_overlapping_one_is_clipped() {
        let names: Vec<Arc<str>> = vec!["outside".into(), "layer".into()];
        let steps = [TraceStep {
            thread_id: 7,
            step_id: 0,
            start_ns: 1_000,
            duration_ns: 9_000,
            batch_size: 2,
            num_tokens: 3,
            gpu_ns: NO_GPU_TIME,
        }];
        let spans = [
            // Inside the step.
            TraceSpan {
                thread_id: 7,
                name: NameId(1),
                seq: 1,
                start_ns: 2_000,
                duration_ns: 1_000,
                gpu_ns: NO_GPU_TIME,
            },
            // Began inside the step, ended after it.
            TraceSpan {
                thread_id: 7,
                name: NameId(0),
                seq: 1,
                start_ns: 5_000,
                duration_ns: 10_000,
                gpu_ns: NO_GPU_TIME,
            },
            // Another thread: untouched.
            TraceSpan {
                thread_id: 8,
                name: NameId(1),
                seq: 1,
                start_ns: 0,
                duration_ns: 50_000,
                gpu_ns: NO_GPU_TIME,
            },
        ];
        let process = TraceProcess {
            pid: 42,
            started_unix: 100.0,
            name: "test".to_owned(),
            role: format::Role::Worker,
            rank: Some(1),
            live: true,
        };
        let records = TraceRecords {
            spans: &spans,
            dropped_spans: 0,
            kernels: &[],
            torch_ops: &[],
        };
        let trace = build(&process, &steps, &records, &names, None);
        assert_eq!(
            trace.other_data.get("role"),
            Some(&TraceArg::Text("worker".to_owned()))
        );
        assert_eq!(trace.other_data.get("rank"), Some(&TraceArg::Count(1)));
        let x: Vec<_> = trace.trace_events.iter().filter(|e| e.ph == "X").collect();
        let summary: Vec<_> = x
            .iter()
            .map(|e| (e.tid, e.name.as_str(), e.ts, e.dur.unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (7, "step 0", 1.0, 9.0),
                (7, "layer", 2.0, 1.0),
                (7, "outside", 5.0, 5.0),
                (8, "layer", 0.0, 50.0),
            ]
        );
        assert_eq!(x[2].args["clipped"], TraceArg::Count(1));
        assert_eq!(x[0].args["batch_size"], TraceArg::Count(2));
        let names: Vec<_> = trace
            .trace_events
            .iter()
            .filter(|e| e.ph == "M" && e.tid == 0)
            .map(|e| (e.name.as_str(), &e.args["name"]))
            .collect();
        assert_eq!(
            names,
            [
                ("process_name", &TraceArg::Text("worker rank 1".to_owned())),
                ("process_labels", &TraceArg::Text("test".to_owned())),
            ]
        );
        assert!(!x[1].args.contains_key("clipped"));
        let threads: Vec<_> = trace
            .trace_events
            .iter()
            .filter(|e| e.ph == "M" && e.name == "thread_name")
            .map(|e| e.tid)
            .collect();
        assert_eq!(threads, [7, 8]);
    }
}
