//! `trace_<pid>.json`: a preloaded C program records steps with nested spans on two threads
//! (the second one's spans straddle its steps on purpose) while the fake NVML is sampled. The
//! trace is checked against the Chrome trace event format, for perfect nesting per thread, and
//! for every step and every span call the other reports count.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use vllm_profiler_format::{self as format, TraceArg, TraceFile};
use vllm_profiler_tests::*;

const STEPS: u64 = 12;

#[test]
fn the_trace_nests_per_thread_and_holds_every_step_span_and_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(
        &workspace_root().join("tests/data/record_steps.c"),
        tmp.path(),
    );
    let out = tmp.path().join("reports");
    let frame = json!({"gpu_utilization": 64, "memory_controller_utilization": 3,
        "memory_used_mb": 4096, "temperature": 50, "power_draw_mw": 150000});
    let mut cmd = profiled_on_fake_gpu(&exe, tmp.path(), &out, "Traced GPU", &[frame], "0.005");
    cmd.args(["trace", &STEPS.to_string()]);
    let child = run(&mut cmd, Duration::from_secs(60));
    assert_success(&child);
    let pid = child.pid;

    // The format: the object form, known phases, every field each phase needs.
    let raw = read_json(&out.join(format::trace_file_name(pid)));
    let events = raw["traceEvents"].as_array().expect("traceEvents");
    for event in events {
        let ph = event["ph"].as_str().expect("ph");
        assert!(["X", "C", "M"].contains(&ph), "{event}");
        assert_eq!(event["pid"], json!(pid), "{event}");
        assert!(
            event["name"].is_string() && event["tid"].is_u64(),
            "{event}"
        );
        match ph {
            "X" => {
                assert!(event["ts"].as_f64().unwrap() >= 0.0, "{event}");
                assert!(event["dur"].as_f64().unwrap() >= 0.0, "{event}");
            }
            "C" => assert!(event["args"].as_object().is_some_and(|a| !a.is_empty())),
            _ => assert!(event["args"]["name"].is_string(), "{event}"),
        }
    }
    let trace: TraceFile = serde_json::from_value(raw.clone()).expect("trace schema");
    let reports = read_reports(&out, pid);

    // Nesting: on each thread, every event ends by the end of the one it starts in.
    let mut by_thread: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    for e in trace.trace_events.iter().filter(|e| e.ph == "X") {
        let start = (e.ts * 1000.0).round() as i64;
        let end = ((e.ts + e.dur.unwrap()) * 1000.0).round() as i64;
        by_thread.entry(e.tid).or_default().push((start, end));
    }
    assert_eq!(by_thread.len(), 2, "two recording threads");
    for (tid, mut intervals) in by_thread {
        intervals.sort_by_key(|&(start, end)| (start, std::cmp::Reverse(end)));
        let mut open: Vec<i64> = Vec::new();
        for (start, end) in intervals {
            while open.last().is_some_and(|&e| e <= start) {
                open.pop();
            }
            if let Some(&outer) = open.last() {
                // One nanosecond of rounding from the microsecond figures.
                assert!(
                    end <= outer + 1,
                    "thread {tid}: [{start}, {end}] overlaps {outer}"
                );
            }
            open.push(end);
        }
    }

    // Every kept step, on its thread, with its counts.
    let steps: Vec<_> = trace
        .trace_events
        .iter()
        .filter(|e| e.cat.as_deref() == Some("step"))
        .collect();
    assert_eq!(steps.len() as u64, 2 * STEPS);
    assert_eq!(reports.steps.detailed_steps.len() as u64, 2 * STEPS);
    for record in &reports.steps.detailed_steps {
        let event = steps
            .iter()
            .find(|e| e.args["step_id"] == TraceArg::Count(record.step_id))
            .unwrap_or_else(|| panic!("step {} missing", record.step_id));
        assert_eq!(event.tid, record.thread_id);
        assert_eq!(
            event.args["batch_size"],
            TraceArg::Count(u64::from(record.batch_size))
        );
        let dur_ms = event.dur.unwrap() / 1000.0;
        if event.args.contains_key("clipped") {
            assert!(dur_ms < record.duration_ms, "a clipped step is shorter");
        } else {
            assert!(
                (dur_ms - record.duration_ms).abs() < 0.001,
                "{dur_ms} vs {record:?}"
            );
        }
    }
    // Every span call the summary counts, by name.
    let mut calls: BTreeMap<&str, u64> = BTreeMap::new();
    for e in trace
        .trace_events
        .iter()
        .filter(|e| e.cat.as_deref() == Some("span"))
    {
        *calls.entry(e.name.as_str()).or_default() += 1;
    }
    let expected: BTreeMap<&str, u64> = reports
        .summary
        .layer_performance
        .iter()
        .map(|(name, layer)| (name.as_str(), layer.call_count))
        .collect();
    assert_eq!(calls, expected);
    // The straddling spans were cut at their step's end, and say so.
    let clipped = trace
        .trace_events
        .iter()
        .filter(|e| e.args.contains_key("clipped"))
        .count() as u64;
    assert_eq!(clipped, STEPS);

    // Metadata and GPU counters.
    let named: Vec<_> = trace
        .trace_events
        .iter()
        .filter(|e| e.ph == "M")
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        named,
        [
            "process_name",
            "process_labels",
            "thread_name",
            "thread_name"
        ]
    );
    // One figure per counter track, its unit in the track's name: one event per sample and
    // figure the fake gives (utilization, memory, temperature, power).
    let counters: Vec<_> = trace.trace_events.iter().filter(|e| e.ph == "C").collect();
    let samples = reports.history.gpu_history.len();
    assert!(samples > 0);
    let mut tracks: BTreeMap<&str, Vec<&TraceArg>> = BTreeMap::new();
    for c in &counters {
        assert_eq!(c.args.len(), 1, "{c:?}");
        tracks
            .entry(c.name.as_str())
            .or_default()
            .push(&c.args["value"]);
    }
    let names: Vec<&str> = tracks.keys().copied().collect();
    assert_eq!(
        names,
        [
            "GPU 0 memory used (MiB)",
            "GPU 0 power (W)",
            "GPU 0 temperature (°C)",
            "GPU 0 utilization (%)"
        ]
    );
    assert!(tracks.values().all(|values| values.len() == samples));
    assert!(tracks["GPU 0 utilization (%)"]
        .iter()
        .all(|v| **v == TraceArg::Number(64.0)));
    assert!(tracks["GPU 0 memory used (MiB)"]
        .iter()
        .all(|v| **v == TraceArg::Number(4096.0)));
    // Integers are written as integers.
    assert_eq!(
        raw["otherData"]["dropped_spans"],
        Value::from(0u64),
        "nothing dropped"
    );
    assert!(raw["otherData"]["dropped_spans"].is_u64());
}
