//! Torch profiler windows handed to a recorder (`record_torch_op_window_json`), as the Python
//! package hands them: per op name in the summary, each window with its top ops, its op
//! executions on a track of their own in the trace at the times its clock gave, its kernels in
//! the kernel level attributed to their steps; refused whole when the document is bad, bounded
//! when it is large.

use std::sync::Arc;

use serde_json::{json, Value};
use vllm_profiler_core::recorder::{MAX_TORCH_OP_NAMES, MAX_WINDOW_EVENTS, MAX_WINDOW_OPS};
use vllm_profiler_core::{Clock, ManualClock, ProfilerError, Session, Settings};
use vllm_profiler_format::{DetailedSteps, PerformanceSummary, TorchOpPerformance, TraceFile};

const PID: u32 = 6161;
const THREAD: u32 = 31;
/// The sender's clock when it sends (nanoseconds of its own epoch).
const SENDER_NOW: u64 = 1_700_000_000_000_000_000;

fn session() -> (Arc<Session>, Arc<ManualClock>) {
    let clock = ManualClock::new(1_000.0);
    let s = Session::with_clock(PID, 1, Settings::default(), Clock::Manual(clock.clone()));
    (s, clock)
}

fn exported(s: &Session) -> (PerformanceSummary, DetailedSteps, TraceFile) {
    let dir = tempfile::tempdir().unwrap();
    s.export(dir.path()).unwrap();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    (
        serde_json::from_slice(&read(&format!("performance_summary_{PID}.json"))).unwrap(),
        serde_json::from_slice(&read(&format!("detailed_steps_{PID}.json"))).unwrap(),
        serde_json::from_slice(&read(&format!("trace_{PID}.json"))).unwrap(),
    )
}

/// An op's figures: `calls`, host and self host time (us), self CPU memory (bytes).
fn op(name: &str, calls: u64, host_us: u64, self_us: u64, memory: i64) -> Value {
    json!({"name": name, "calls": calls, "host_ns": host_us * 1000,
           "self_host_ns": self_us * 1000, "self_cpu_memory_bytes": memory})
}

/// A window of the sender that ended `ago_us` before it sent, `length_us` long.
fn window(steps: &[u64], ops: Vec<Value>, ago_us: u64, length_us: u64) -> Value {
    let end = SENDER_NOW - ago_us * 1000;
    json!({"now_ns": SENDER_NOW, "start_ns": end - length_us * 1000, "end_ns": end,
           "steps": steps, "ops": ops})
}

/// `n` steps begun and ended on `rec`: their handles.
fn ended_steps(rec: &mut vllm_profiler_core::ThreadRecorder, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let step = rec.step_begin(1, 8).unwrap();
            rec.step_end(step).unwrap();
            step
        })
        .collect()
}

fn send(rec: &mut vllm_profiler_core::ThreadRecorder, doc: &Value) -> Result<(), ProfilerError> {
    rec.record_torch_op_window_json(doc.to_string().as_bytes())
}

#[test]
fn windows_add_up_per_op_and_list_their_top_ops() {
    let (s, clock) = session();
    clock.set_ns(50_000_000); // 50 ms into the session
    let mut rec = s.register_thread(THREAD);
    let steps = ended_steps(&mut rec, 2);
    let first = vec![
        op("aten::linear", 6, 300, 20, 1920),
        op("aten::addmm", 6, 200, 150, 1920),
        op("aten::relu", 3, 50, 28, 0),
    ];
    send(&mut rec, &window(&steps, first, 1_000, 4_000)).unwrap();
    let second = vec![
        op("aten::linear", 4, 100, 10, 512),
        // The same name twice in one document is added up.
        op("aten::relu", 1, 10, 5, 0),
        op("aten::relu", 1, 10, 5, 0),
    ];
    send(&mut rec, &window(&steps[1..], second, 0, 2_000)).unwrap();

    let (summary, _, _) = exported(&s);
    let ops = summary.torch_op_performance.expect("two windows");
    assert_eq!(ops.len(), 3);
    let linear = &ops["aten::linear"];
    assert_eq!(linear.call_count, 10);
    assert_eq!(linear.host_time_ms, 0.4);
    assert_eq!(linear.self_host_time_ms, 0.03);
    assert_eq!(linear.avg_host_time_ms, 0.04);
    assert_eq!(linear.self_cpu_memory_bytes, Some(2432));
    assert_eq!(
        (linear.device_time_ms, linear.self_device_memory_bytes),
        (None, None)
    );
    assert_eq!(ops["aten::relu"].call_count, 5);

    let windows = summary.torch_op_windows.expect("two windows");
    assert_eq!(windows.len(), 2);
    assert_eq!((windows[0].window, windows[1].window), (0, 1));
    assert_eq!((windows[0].steps, windows[1].steps), (2, 1));
    assert_eq!((windows[0].op_names, windows[1].op_names), (3, 2));
    assert_eq!(windows[0].duration_ms, 4.0);
    // Placed on the session's clock: it ended 1 ms before the call, at 49 ms.
    assert_eq!(windows[0].start_time, 1_000.0 + 0.045);
    let tops: Vec<&str> = windows[0].top_ops.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        tops,
        ["aten::addmm", "aten::relu", "aten::linear"],
        "by self host time"
    );
    assert_eq!(windows[1].top_ops[1].call_count, 2);
    assert_eq!(summary.counters.torch_op_windows, 2);
    assert_eq!(summary.counters.lost_torch_op_windows, 0);
}

#[test]
fn op_executions_are_in_the_trace_on_a_track_beside_their_thread() {
    let (s, clock) = session();
    clock.set_ns(10_000_000);
    let mut rec = s.register_thread(THREAD);
    let step = ended_steps(&mut rec, 1)[0];
    let mut doc = window(&[step], vec![op("aten::mm", 1, 5, 5, 0)], 0, 1_000);
    doc["events"] = json!([
        {"name": "aten::linear", "start_ns": SENDER_NOW - 900_000, "duration_ns": 300_000},
        {"name": "aten::mm", "start_ns": SENDER_NOW - 800_000, "duration_ns": 100_000},
        {"name": "aten::mm", "thread": 2, "start_ns": SENDER_NOW - 500_000, "duration_ns": 1_000},
        // From before the session began, and after the sender's now: dropped, counted.
        {"name": "aten::mm", "start_ns": SENDER_NOW - 20_000_000, "duration_ns": 1},
        {"name": "aten::mm", "start_ns": SENDER_NOW + 1, "duration_ns": 1},
    ]);
    doc["dropped_events"] = json!(3);
    send(&mut rec, &doc).unwrap();

    let (summary, _, trace) = exported(&s);
    let ops: Vec<_> = (trace.trace_events.iter())
        .filter(|e| e.cat.as_deref() == Some("torch_op"))
        .map(|e| (e.name.as_str(), e.tid, e.ts, e.dur.unwrap()))
        .collect();
    let own = (1 << 30) | THREAD;
    let other = (1 << 30) | (1 << 29) | 2;
    assert_eq!(
        ops,
        [
            ("aten::linear", own, 9_100.0, 300.0),
            ("aten::mm", own, 9_200.0, 100.0),
            ("aten::mm", other, 9_500.0, 1.0),
        ]
    );
    let track_names: Vec<_> = (trace.trace_events.iter())
        .filter(|e| e.ph == "M" && (e.tid == own || e.tid == other))
        .map(|e| e.args["name"].clone())
        .collect();
    assert_eq!(
        serde_json::to_value(track_names).unwrap(),
        json!(["torch ops (thread 31)", "torch ops (torch thread 2)"])
    );
    let w = &summary.torch_op_windows.unwrap()[0];
    assert_eq!((w.trace_events, w.dropped_trace_events), (3, 5));
    assert_eq!(summary.counters.dropped_torch_op_events, 5);
}

#[test]
fn kernels_of_a_window_go_to_the_kernel_level_and_to_their_steps() {
    let (s, clock) = session();
    clock.set_ns(10_000_000);
    let mut rec = s.register_thread(THREAD);
    let steps = ended_steps(&mut rec, 2);
    let mut doc = window(&steps, vec![], 0, 1_000);
    let kernel = |step: Value, name: &str| {
        json!({"name": name, "device": 0, "stream": 7, "start_ns": SENDER_NOW - 500_000,
               "duration_ns": 20_000, "step": step})
    };
    doc["kernels"] = json!([
        kernel(json!(0), "gemm"),
        kernel(json!(1), "gemm"),
        kernel(json!(1), "softmax"),
        kernel(json!(9), "gemm"),       // no such step: unattributed
        kernel(Value::Null, "softmax"), // unknown step: unattributed
    ]);
    // A kernel said to run past the sender's now is cut there.
    doc["kernels"][0]["duration_ns"] = json!(u64::MAX);
    send(&mut rec, &doc).unwrap();
    s.drain().unwrap();

    let (summary, steps, trace) = exported(&s);
    let kernels = summary.kernel_performance.expect("kernels came");
    assert_eq!(kernels["gemm"].call_count, 3);
    assert_eq!(kernels["softmax"].total_duration_ms, 0.04);
    assert_eq!(
        kernels["gemm"].max_duration_ms, 0.5,
        "cut at the sender's now"
    );
    assert_eq!(
        kernels["gemm"].launch, None,
        "the torch profiler gives none"
    );
    assert_eq!(summary.counters.kernel_records, 5);
    assert_eq!(summary.counters.unattributed_kernels, 2);
    let counts: Vec<u32> = steps
        .detailed_steps
        .iter()
        .map(|s| s.kernel_count)
        .collect();
    assert_eq!(counts, [1, 2]);
    let on_stream = (trace.trace_events.iter())
        .filter(|e| e.cat.as_deref() == Some("kernel"))
        .count();
    assert_eq!(on_stream, 5);
}

#[test]
fn a_bad_document_is_refused_whole_with_its_reason() {
    let (s, clock) = session();
    clock.set_ns(10_000_000);
    let mut rec = s.register_thread(THREAD);
    let good = window(&[], vec![op("aten::mm", 1, 5, 5, 0)], 0, 1_000);
    let mut cases = vec![
        (b"{".to_vec(), "not a window"),
        (br#"{"now_ns": 1}"#.to_vec(), "missing field"),
        (
            br#"{"now_ns":-1,"start_ns":0,"end_ns":0,"steps":[]}"#.to_vec(),
            "not a window",
        ),
    ];
    let mut bad = |edit: &dyn Fn(&mut Value), why: &'static str| {
        let mut doc = good.clone();
        edit(&mut doc);
        cases.push((doc.to_string().into_bytes(), why));
    };
    bad(&|d| d["start_ns"] = json!(SENDER_NOW + 1), "does not hold");
    bad(&|d| d["end_ns"] = json!(SENDER_NOW + 1), "does not hold");
    bad(
        &|d| d["ops"][0]["self_host_ns"] = json!(6_000),
        "self_host_ns 6000 > host_ns 5000",
    );
    bad(&|d| d["colour"] = json!(1), "unknown field");
    bad(&|d| d["ops"][0]["calls"] = json!("1"), "not a window");
    for (doc, why) in &cases {
        let err = rec.record_torch_op_window_json(doc).unwrap_err();
        assert_eq!(err.code(), -2, "{err}");
        let text = err.to_string();
        assert!(text.contains(why), "{text}");
        assert!(
            text.ends_with("the torch op window was not recorded"),
            "{text}"
        );
    }
    assert!(summary_has_no_windows(&s));
}

fn summary_has_no_windows(s: &Session) -> bool {
    let summary = s.summary(None).unwrap();
    summary.torch_op_performance.is_none() && summary.counters.torch_op_windows == 0
}

#[test]
fn large_windows_are_bounded_and_counted() {
    let (s, clock) = session();
    clock.set_ns(10_000_000);
    let mut rec = s.register_thread(THREAD);
    let ops = (0..MAX_WINDOW_OPS + 3)
        .map(|i| op(&format!("op{i}"), 1, 1, 1, 0))
        .collect();
    let mut doc = window(&[], ops, 0, 1_000);
    let event = json!({"name": "op0", "start_ns": SENDER_NOW - 1_000, "duration_ns": 1});
    doc["events"] = Value::Array(vec![event; MAX_WINDOW_EVENTS + 2]);
    send(&mut rec, &doc).unwrap();
    let summary = s.summary(None).unwrap();
    let ops = summary.torch_op_performance.unwrap();
    // 1024 names of their own; the rest of the window's 4096 and the 3 past it share one.
    assert_eq!(ops.len(), 1025);
    assert_eq!(ops[TorchOpPerformance::OTHER_OPS].call_count, 3075);
    assert_eq!(summary.counters.dropped_torch_op_events, 2);
    let w = &summary.torch_op_windows.unwrap()[0];
    assert_eq!(w.op_names as usize, MAX_WINDOW_OPS + 1);
    assert_eq!(w.trace_events as usize, MAX_WINDOW_EVENTS);
}

#[test]
fn windows_past_the_inbox_are_lost_and_counted() {
    let (s, clock) = session();
    clock.set_ns(10_000_000);
    let mut rec = s.register_thread(THREAD);
    let doc = window(&[], vec![op("aten::mm", 1, 5, 5, 0)], 0, 1_000);
    for _ in 0..10 {
        send(&mut rec, &doc).unwrap();
    }
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.counters.torch_op_windows, 8);
    assert_eq!(summary.counters.lost_torch_op_windows, 2);
    assert_eq!(
        summary.torch_op_performance.unwrap()["aten::mm"].call_count,
        8
    );
}

#[test]
fn windows_take_a_bounded_share_of_the_name_table_and_a_refused_one_none() {
    let (s, clock) = session();
    clock.set_ns(10_000_000);
    let mut rec = s.register_thread(THREAD);
    let names = |n: usize, from: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| op(&format!("op{i}"), 1, 1, 1, 0))
            .collect()
    };
    // Refused (its last op's self time is past its total): not one of its names is kept.
    let mut refused = window(&[], names(100, 0), 0, 1_000);
    refused["ops"][99]["self_host_ns"] = json!(5_000);
    assert!(send(&mut rec, &refused).is_err());
    assert_eq!(s.interner().len(), 0);
    // Windows of 3000 new names each, until past the share.
    for i in 0..3 {
        send(&mut rec, &window(&[], names(3000, 3000 * i), 0, 1_000)).unwrap();
    }
    assert_eq!(s.interner().len(), MAX_TORCH_OP_NAMES as usize);
    // The summary keeps 1024 names of its own either way; the windows list the rest apart
    // only while they had names.
    let summary = s.summary(None).unwrap();
    let ops = summary.torch_op_performance.unwrap();
    assert_eq!(ops[TorchOpPerformance::OTHER_OPS].call_count, 9000 - 1024);
    let last = summary.torch_op_windows.unwrap().pop().unwrap();
    assert_eq!(
        last.op_names as usize,
        8192 - 6000 + 1,
        "named ones and (other ops)"
    );
    // Spans still get names.
    let span = rec.span_begin(b"model.layers.0").unwrap();
    rec.span_end(span).unwrap();
    assert_eq!(s.summary(None).unwrap().counters.total_spans, 1);
}
