//! Kernel records handed to the session (`Session::record_kernels`), as the CUPTI tracer
//! hands them: attributed to the step and span whose context their launch carried, whether
//! they arrive before the step ended or after it was kept; counted where no step is found;
//! bounded by the inbox; and in the summary per kernel name with its launch configuration.

use std::sync::Arc;

use vllm_profiler_core::kernel_inbox::{KernelLaunch, INBOX_LIMIT};
use vllm_profiler_core::{Session, Settings};
use vllm_profiler_format::{
    DetailedSteps, KernelLaunch as LaunchConfig, PerformanceSummary, TraceArg, TraceFile,
};

const PID: u32 = 5151;
const US: u64 = 1_000;

fn session() -> Arc<Session> {
    Session::new(PID, 1, Settings::default())
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

const GEMM_LAUNCH: &str = r#"{"grid":[128,1,1],"block":[256,1,1],"registers_per_thread":64,"static_shared_memory_bytes":16384,"dynamic_shared_memory_bytes":0}"#;

fn launch(s: &Session, context: u64, name: &str, start_us: u64, duration_us: u64) -> KernelLaunch {
    KernelLaunch {
        context,
        name: s.interner().intern(name.as_bytes()).unwrap(),
        launch: s.shapes().intern(GEMM_LAUNCH.as_bytes()).unwrap(),
        device: 0,
        stream: 7,
        from_graph: false,
        start_ns: start_us * US,
        duration_ns: duration_us * US,
    }
}

#[test]
fn kernels_land_in_the_step_and_name_of_their_launch_early_or_late() {
    let s = session();
    let mut rec = s.register_thread(31);
    assert_eq!(rec.kernel_context(), 0, "nothing open");

    let step0 = rec.step_begin(2, 20).unwrap();
    let in_step0 = rec.kernel_context();
    let attn = rec.span_begin(b"attn").unwrap();
    let in_attn = rec.kernel_context();
    rec.span_end(attn).unwrap();
    // Two kernels of step 0 arrive while it is still open: before any builder exists.
    s.record_kernels(&[
        launch(&s, in_attn, "gemm", 100, 30),
        launch(&s, in_step0, "softmax", 120, 20), // overlaps gemm by 10 us
    ]);
    s.drain().unwrap();
    rec.step_end(step0).unwrap();

    let step1 = rec.step_begin(2, 20).unwrap();
    let in_step1 = rec.kernel_context();
    rec.step_end(step1).unwrap();
    // An empty step's kernel, and one launched outside every step.
    let empty = rec.step_begin(0, 0).unwrap();
    let in_empty = rec.kernel_context();
    rec.step_end(empty).unwrap();
    s.drain().unwrap();
    // After both steps were kept: step 0's late kernel, step 1's graph replay.
    let mut replay = launch(&s, in_step1, "gemm", 500, 40);
    replay.from_graph = true;
    s.record_kernels(&[
        launch(&s, in_attn, "gemm", 200, 50),
        replay,
        replay,
        launch(&s, in_empty, "gemm", 900, 1),
        launch(&s, 0, "memset", 950, 2),
    ]);
    assert_ne!(in_step0, in_attn);
    assert_ne!(in_step0, in_step1);

    let (summary, steps, trace) = exported(&s);
    let kernels = summary.kernel_performance.expect("kernel records came");
    let gemm = &kernels["gemm"];
    assert_eq!((gemm.call_count, gemm.graph_launches), (5, 2));
    assert_eq!(gemm.total_duration_ms, 0.161);
    assert_eq!(gemm.max_duration_ms, 0.05);
    assert_eq!(
        gemm.p99_duration_ms, 0.05,
        "within 1 % and never above the max"
    );
    let config: LaunchConfig = serde_json::from_str(GEMM_LAUNCH).unwrap();
    assert_eq!(gemm.launch.as_ref(), Some(&config));
    assert_eq!(kernels["softmax"].call_count, 1);
    assert_eq!(kernels["memset"].call_count, 1);
    assert_eq!(summary.counters.kernel_records, 7);
    assert_eq!(
        summary.counters.unattributed_kernels, 2,
        "the empty step's and the free one"
    );
    assert_eq!(summary.counters.lost_kernel_records, 0);

    let [first, second] = &steps.detailed_steps[..] else {
        panic!("two steps did work: {:?}", steps.detailed_steps.len())
    };
    assert_eq!(first.kernel_count, 3);
    // 100..130 and 120..140 overlap: 40 us busy; then 200..250.
    assert_eq!(first.device_busy_ms, Some(0.09));
    let top = first.top_kernels.as_ref().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!((top[0].name.as_str(), top[0].call_count), ("gemm", 2));
    assert_eq!(top[0].duration_ms, 0.08);
    assert_eq!((top[1].name.as_str(), top[1].call_count), ("softmax", 1));
    assert_eq!(second.kernel_count, 2);
    // The two replays ran back to back at the same start in this test: counted once.
    assert_eq!(second.device_busy_ms, Some(0.04));

    // In the trace: one track for device 0 stream 7, every kernel on it, named and with the
    // launching thread and span.
    let on_track: Vec<_> = (trace.trace_events.iter())
        .filter(|e| e.cat.as_deref() == Some("kernel"))
        .collect();
    assert_eq!(on_track.len(), 7);
    let track = on_track[0].tid;
    assert!(on_track.iter().all(|e| e.tid == track && e.pid == PID));
    let first_gemm = on_track.iter().find(|e| e.ts == 100.0).unwrap();
    assert_eq!(
        (first_gemm.name.as_str(), first_gemm.dur),
        ("gemm", Some(30.0))
    );
    assert_eq!(first_gemm.args["span"], TraceArg::Text("attn".to_owned()));
    assert_eq!(first_gemm.args["launched_by_thread"], TraceArg::Count(31));
    let named = trace
        .trace_events
        .iter()
        .find(|e| e.ph == "M" && e.tid == track);
    assert_eq!(
        named.map(|e| &e.args["name"]),
        Some(&TraceArg::Text("GPU 0 stream 7".to_owned()))
    );
}

#[test]
fn a_session_without_kernels_reports_them_null_and_zero() {
    let s = session();
    let mut rec = s.register_thread(32);
    let step = rec.step_begin(1, 1).unwrap();
    rec.step_end(step).unwrap();
    let (summary, steps, trace) = exported(&s);
    assert!(trace
        .trace_events
        .iter()
        .all(|e| e.cat.as_deref() != Some("kernel")));
    assert_eq!(summary.kernel_performance, None);
    assert_eq!(summary.counters.kernel_records, 0);
    let step = &steps.detailed_steps[0];
    assert_eq!((step.kernel_count, step.device_busy_ms), (0, None));
    assert_eq!(step.top_kernels, None);
}

#[test]
fn records_past_the_inbox_limit_are_counted_lost_not_kept() {
    let s = session();
    let one = launch(&s, 0, "gemm", 1, 1);
    let many = vec![one; INBOX_LIMIT + 5];
    s.record_kernels(&many);
    s.record_kernels(&[one]);
    s.count_dropped_kernel_records(9);
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.counters.lost_kernel_records, 6);
    assert_eq!(summary.counters.kernel_records, INBOX_LIMIT as u64);
    assert_eq!(summary.counters.dropped_kernel_records, 9);
    // The inbox was emptied by the drain: the next batch is taken whole.
    s.record_kernels(&[one, one]);
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.counters.kernel_records, INBOX_LIMIT as u64 + 2);
    assert_eq!(summary.counters.lost_kernel_records, 6);
}
