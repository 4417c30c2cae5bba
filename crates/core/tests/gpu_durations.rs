//! Device durations set after their span or step ended (`span_set_gpu_duration`,
//! `step_set_gpu_duration`): folded into the layer of the right step, whether it is still in
//! progress or already kept, and into the summary; host times are untouched, and the figures
//! are null where none was set.

use std::sync::Arc;

use vllm_profiler_core::error::ProfilerError;
use vllm_profiler_core::{Session, Settings};
use vllm_profiler_format::{DetailedSteps, PerformanceSummary, TraceArg, TraceFile};

fn session() -> Arc<Session> {
    Session::new(
        4545,
        1,
        Settings {
            max_history: 100,
            ..Settings::default()
        },
    )
}

fn exported(s: &Session) -> (PerformanceSummary, DetailedSteps) {
    let dir = tempfile::tempdir().unwrap();
    s.export(dir.path()).unwrap();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    (
        serde_json::from_slice(&read("performance_summary_4545.json")).unwrap(),
        serde_json::from_slice(&read("detailed_steps_4545.json")).unwrap(),
    )
}

const MS: u64 = 1_000_000;

#[test]
fn durations_land_in_their_step_and_layer_early_or_late() {
    let s = session();
    let mut rec = s.register_thread(1);
    // Step 0: attn twice, mlp once. One attn duration is set while the step is still open,
    // the other and mlp's after the step ended (as a CUDA event pair resolves a step late).
    let step0 = rec.step_begin(4, 64).unwrap();
    let attn_a = rec.span_begin(b"attn").unwrap();
    rec.span_end(attn_a).unwrap();
    rec.span_set_gpu_duration(attn_a, 3 * MS).unwrap();
    let attn_b = rec.span_begin(b"attn").unwrap();
    rec.span_end(attn_b).unwrap();
    let mlp = rec.span_begin(b"mlp").unwrap();
    rec.span_end(mlp).unwrap();
    assert!(matches!(
        rec.step_set_gpu_duration(step0, MS),
        Err(ProfilerError::InvalidArgument(_))
    ));
    rec.step_end(step0).unwrap();
    // Drained between: the late ones find a kept step.
    s.summary(None).unwrap();
    rec.span_set_gpu_duration(attn_b, 2 * MS).unwrap();
    rec.span_set_gpu_duration(mlp, 5 * MS).unwrap();
    rec.step_set_gpu_duration(step0, 11 * MS).unwrap();
    // Step 1: no device time at all (as on CPU).
    let step1 = rec.step_begin(4, 64).unwrap();
    let attn = rec.span_begin(b"attn").unwrap();
    rec.span_end(attn).unwrap();
    rec.step_end(step1).unwrap();

    let (summary, steps) = exported(&s);
    let first = &steps.detailed_steps[0];
    assert_eq!(first.gpu_duration_ms, Some(11.0));
    assert_eq!(first.layer_timings["attn"].gpu_duration_ms, Some(5.0));
    assert_eq!(first.layer_timings["attn"].call_count, 2);
    assert_eq!(first.layer_timings["mlp"].gpu_duration_ms, Some(5.0));
    assert!(
        first.layer_timings["attn"].duration_ms < 1000.0,
        "host time untouched"
    );
    let second = &steps.detailed_steps[1];
    assert_eq!(second.gpu_duration_ms, None);
    assert_eq!(second.layer_timings["attn"].gpu_duration_ms, None);

    let attn = &summary.layer_performance["attn"];
    assert_eq!(attn.call_count, 3);
    assert_eq!(attn.total_gpu_duration_ms, Some(5.0));
    assert_eq!(
        attn.avg_gpu_duration_ms,
        Some(2.5),
        "over the two calls that had one"
    );
    assert_eq!(
        summary.layer_performance["mlp"].avg_gpu_duration_ms,
        Some(5.0)
    );
    assert_eq!(summary.counters.unmatched_gpu_durations, 0);

    // The trace: each span's own device time as `gpu_ms` beside its host length, none where
    // none was set.
    let dir = tempfile::tempdir().unwrap();
    s.export(dir.path()).unwrap();
    let trace: TraceFile =
        serde_json::from_slice(&std::fs::read(dir.path().join("trace_4545.json")).unwrap())
            .unwrap();
    let gpu_ms: Vec<(&str, Option<f64>)> = (trace.trace_events.iter())
        .filter(|e| e.ph == "X")
        .map(|e| {
            let ms = e.args.get("gpu_ms").map(|a| match a {
                TraceArg::Number(ms) => *ms,
                other => panic!("{other:?}"),
            });
            (e.name.as_str(), ms)
        })
        .collect();
    assert_eq!(
        gpu_ms,
        [
            ("step 0", Some(11.0)),
            ("attn", Some(3.0)),
            ("attn", Some(2.0)),
            ("mlp", Some(5.0)),
            ("step 1", None),
            ("attn", None),
        ]
    );

    // The last-n summary sees the kept steps' device times too.
    let last = s.summary(Some(2)).unwrap();
    assert_eq!(
        last.layer_performance["attn"].total_gpu_duration_ms,
        Some(5.0)
    );
    assert_eq!(
        last.layer_performance["attn"].avg_gpu_duration_ms,
        Some(5.0 / 2.0)
    );
}

#[test]
fn a_forgotten_or_foreign_handle_is_refused_and_nothing_is_made_up() {
    let s = session();
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let first = rec.span_begin(b"layer").unwrap();
    rec.span_end(first).unwrap();
    let open = rec.span_begin(b"open").unwrap();
    // A span still open is not one this thread ended.
    assert!(matches!(
        rec.span_set_gpu_duration(open, MS),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    rec.span_end(open).unwrap();
    // 4096 spans later the first is forgotten.
    for _ in 0..4096 {
        let h = rec.span_begin(b"filler").unwrap();
        rec.span_end(h).unwrap();
    }
    assert!(matches!(
        rec.span_set_gpu_duration(first, MS),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    // Another thread's handle is not this one's.
    let other = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut rec = s.register_thread(2);
                let h = rec.span_begin(b"theirs").unwrap();
                rec.span_end(h).unwrap();
                h
            })
            .join()
            .unwrap()
    });
    assert!(rec.span_set_gpu_duration(other, MS).is_err());
    assert!(rec.span_set_gpu_duration(0, MS).is_err());
    rec.step_end(step).unwrap();

    // A step handle that names no kept step (a span's number) reaches the collector and is
    // counted, not folded anywhere.
    rec.step_set_gpu_duration(first, MS).unwrap();
    let (summary, steps) = exported(&s);
    assert_eq!(summary.counters.unmatched_gpu_durations, 1);
    assert_eq!(steps.detailed_steps[0].gpu_duration_ms, None);
    assert!(summary
        .layer_performance
        .values()
        .all(|l| l.total_gpu_duration_ms.is_none()));
}
