//! Device durations set after their span or step ended (`span_set_gpu_duration`,
//! `step_set_gpu_duration`): folded into the layer of the right step, whether it is still in
//! progress or already kept, and into the summary; host times are untouched, and the figures
//! are null where none was set.

use std::sync::Arc;

use vllm_profiler_core::error::ProfilerError;
use vllm_profiler_core::{recover, Session, Settings};
use vllm_profiler_format::{DetailedSteps, PerformanceSummary, TraceArg, TraceFile};

fn session(max_history: usize) -> Arc<Session> {
    Session::new(
        4545,
        1,
        Settings {
            max_history,
            ..Settings::default()
        },
    )
}

fn exported(s: &Session) -> (PerformanceSummary, DetailedSteps) {
    let dir = tempfile::tempdir().unwrap();
    s.export(dir.path()).unwrap();
    read_dir(dir.path())
}

fn read_dir(dir: &std::path::Path) -> (PerformanceSummary, DetailedSteps) {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    (
        serde_json::from_slice(&read("performance_summary_4545.json")).unwrap(),
        serde_json::from_slice(&read("detailed_steps_4545.json")).unwrap(),
    )
}

const MS: u64 = 1_000_000;

#[test]
fn durations_land_in_their_step_and_layer_early_or_late() {
    let s = session(100);
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
    let s = session(100);
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

    // A span's handle is no step's, and a second set of one span or step is refused.
    assert!(matches!(
        rec.step_set_gpu_duration(open, MS),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    rec.step_set_gpu_duration(step, MS).unwrap();
    assert!(rec.step_set_gpu_duration(step, MS).is_err());
    let last = rec.span_begin(b"last").unwrap();
    rec.span_end(last).unwrap();
    rec.span_set_gpu_duration(last, MS).unwrap();
    assert!(rec.span_set_gpu_duration(last, MS).is_err());
    // A duration of 2^63 ns or more (the reports' "never set" is u64::MAX) is refused.
    let huge = rec.span_begin(b"huge").unwrap();
    rec.span_end(huge).unwrap();
    assert!(matches!(
        rec.span_set_gpu_duration(huge, 1 << 63),
        Err(ProfilerError::InvalidArgument(_))
    ));
    rec.span_set_gpu_duration(huge, (1 << 63) - 1).unwrap();
    let (summary, steps) = exported(&s);
    assert_eq!(summary.counters.unmatched_gpu_durations, 0);
    assert_eq!(steps.detailed_steps[0].gpu_duration_ms, Some(1.0));
    let layers = &summary.layer_performance;
    assert_eq!(layers["last"].total_gpu_duration_ms, Some(1.0));
    assert_eq!(layers["huge"].call_count, 1);
    assert!(layers["filler"].total_gpu_duration_ms.is_none());
}

/// A layer called twice in a step with device time for one call: the full and the last-n
/// summary both average over the one call.
#[test]
fn the_last_n_summary_averages_over_the_timed_calls_as_the_full_one_does() {
    let s = session(100);
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let a = rec.span_begin(b"L").unwrap();
    rec.span_end(a).unwrap();
    let b = rec.span_begin(b"L").unwrap();
    rec.span_end(b).unwrap();
    rec.step_end(step).unwrap();
    rec.span_set_gpu_duration(a, 10 * MS).unwrap();
    let full = s.summary(None).unwrap().layer_performance["L"].avg_gpu_duration_ms;
    let last = s.summary(Some(1)).unwrap().layer_performance["L"].avg_gpu_duration_ms;
    assert_eq!((full, last), (Some(10.0), Some(10.0)));
}

/// A span whose step was evicted: counted unmatched, kept in its layer's summary total (the
/// totals cover every step), in no step.
#[test]
fn a_duration_whose_step_was_evicted_is_counted_and_in_the_totals_only() {
    let s = session(2);
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let span = rec.span_begin(b"L").unwrap();
    rec.span_end(span).unwrap();
    rec.step_end(step).unwrap();
    for _ in 0..3 {
        let st = rec.step_begin(1, 1).unwrap();
        rec.step_end(st).unwrap();
    }
    s.summary(None).unwrap();
    rec.span_set_gpu_duration(span, 7 * MS).unwrap();
    let (summary, steps) = exported(&s);
    assert_eq!(summary.counters.unmatched_gpu_durations, 1);
    assert_eq!(
        summary.layer_performance["L"].total_gpu_duration_ms,
        Some(7.0)
    );
    assert!(steps
        .detailed_steps
        .iter()
        .all(|s| s.gpu_duration_ms.is_none()));
}

/// Another thread's steps do not push this thread's out of reach.
#[test]
fn another_threads_steps_leave_this_threads_step_in_reach() {
    let s = session(1000);
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let span = rec.span_begin(b"L").unwrap();
    rec.span_end(span).unwrap();
    rec.step_end(step).unwrap();
    s.summary(None).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut other = s.register_thread(2);
            for _ in 0..70 {
                let st = other.step_begin(1, 1).unwrap();
                other.step_end(st).unwrap();
            }
        });
    });
    s.summary(None).unwrap();
    rec.span_set_gpu_duration(span, 7 * MS).unwrap();
    rec.step_set_gpu_duration(step, 9 * MS).unwrap();
    let (summary, steps) = exported(&s);
    let mine = (steps.detailed_steps.iter())
        .find(|k| k.layer_timings.contains_key("L"))
        .unwrap();
    assert_eq!(summary.counters.unmatched_gpu_durations, 0);
    assert_eq!(mine.gpu_duration_ms, Some(9.0));
    assert_eq!(mine.layer_timings["L"].gpu_duration_ms, Some(7.0));
}

/// A span lost to a full ring is in no total: it takes no device time either.
#[test]
fn a_span_lost_to_a_full_buffer_takes_no_device_time() {
    let s = session(100);
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let mut lost = None;
    for _ in 0..9000 {
        let h = rec.span_begin(b"L").unwrap();
        if rec.span_end(h).is_err() {
            lost = Some(h);
        }
    }
    let lost = lost.expect("the ring filled");
    s.summary(None).unwrap();
    assert!(matches!(
        rec.span_set_gpu_duration(lost, 5 * MS),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    rec.step_end(step).unwrap();
    let (_, steps) = exported(&s);
    assert_eq!(
        steps.detailed_steps[0].layer_timings["L"].gpu_duration_ms,
        None
    );
}

/// Journal: device times set early and late come back from recover as the live session had.
#[test]
fn recover_keeps_device_times() {
    let dir = tempfile::tempdir().unwrap();
    let live = Session::new(
        4545,
        1,
        Settings {
            output_dir: dir.path().to_path_buf(),
            max_history: 50,
            journal: true,
            ..Settings::default()
        },
    );
    {
        let mut rec = live.register_thread(1);
        for i in 0..5u64 {
            let step = rec.step_begin(1, 1).unwrap();
            let a = rec.span_begin(b"A").unwrap();
            rec.span_end(a).unwrap();
            rec.span_set_gpu_duration(a, (i + 1) * MS).unwrap(); // early
            let b = rec.span_begin(b"B").unwrap();
            rec.span_end(b).unwrap();
            rec.step_end(step).unwrap();
            drop(live.collect());
            rec.span_set_gpu_duration(b, 2 * MS).unwrap(); // late, after its step was journaled
            rec.step_set_gpu_duration(step, 3 * MS).unwrap();
            if let Some(job) = live.collect().job {
                job.run();
            }
        }
    }
    let a = tempfile::tempdir().unwrap();
    live.export(a.path()).unwrap();
    drop(live);
    let rec = recover(dir.path(), 4545, false).unwrap().expect("journal");
    let b = tempfile::tempdir().unwrap();
    rec.session.close_and_export(b.path()).unwrap();
    let (ls, lsteps) = read_dir(a.path());
    let (rs, rsteps) = read_dir(b.path());
    assert_eq!(ls.layer_performance, rs.layer_performance);
    assert_eq!(
        ls.counters.unmatched_gpu_durations,
        rs.counters.unmatched_gpu_durations
    );
    let g = |d: &DetailedSteps| {
        d.detailed_steps
            .iter()
            .map(|s| (s.gpu_duration_ms, s.layer_timings["B"].gpu_duration_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(g(&lsteps), g(&rsteps));
    assert_eq!(g(&lsteps).len(), 5);
    assert!(
        g(&lsteps).iter().all(|x| *x == (Some(3.0), Some(2.0))),
        "{:?}",
        g(&lsteps)
    );
}
