//! The recorder and collector, driven directly: exact counts, nesting, drops and errors.

use std::sync::Arc;

use vllm_profiler_core::{Clock, ManualClock, ProfilerError, Session, Settings};

fn session(max_history: usize) -> Arc<Session> {
    Session::new(
        4242,
        1,
        Settings {
            max_history,
            ..Settings::default()
        },
    )
}

/// A session whose clock moves only when the test says: durations are exact, nothing sleeps.
fn session_with_clock(max_history: usize) -> (Arc<Session>, Arc<ManualClock>) {
    let clock = ManualClock::new(1_700_000_000.0);
    let session = Session::with_clock(
        4242,
        1,
        Settings {
            max_history,
            ..Settings::default()
        },
        Clock::Manual(clock.clone()),
    );
    (session, clock)
}

#[test]
fn steps_and_nested_spans_reach_summary_and_history() {
    let (s, clock) = session_with_clock(100);
    let mut rec = s.register_thread(7);
    for i in 0..3u32 {
        let step = rec.step_begin(4 + i, 100 * (i + 1)).unwrap();
        let outer = rec.span_begin(b"model.layers.0").unwrap();
        let inner = rec.span_begin(b"model.layers.0.attn").unwrap();
        clock.advance_ms(2);
        rec.span_end(inner).unwrap();
        rec.span_end(outer).unwrap();
        rec.step_end(step).unwrap();
    }
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.total_steps, 3);
    assert_eq!(summary.total_tokens, 600);
    assert_eq!(summary.total_batch_size, 15);
    let (min, max) = (
        summary.min_duration_ms.unwrap(),
        summary.max_duration_ms.unwrap(),
    );
    assert!(min >= 2.0);
    for p in [
        summary.p50_duration_ms,
        summary.p90_duration_ms,
        summary.p99_duration_ms,
    ] {
        let p = p.unwrap();
        // hdrhistogram keeps 3 significant figures.
        assert!(
            p >= min * 0.999 && p <= max * 1.001,
            "{p} not in [{min}, {max}]"
        );
    }
    assert_eq!(summary.layer_performance["model.layers.0"].call_count, 3);
    assert_eq!(
        summary.layer_performance["model.layers.0.attn"].call_count,
        3
    );
    assert!(summary.layer_performance["model.layers.0.attn"].avg_duration_ms >= 2.0);
    assert_eq!(summary.counters.total_spans, 6);
    assert_eq!(summary.counters.auto_closed_spans, 0);

    let dir = tempfile::tempdir().unwrap();
    let files = s.export(dir.path()).unwrap();
    // Summary, detailed steps and trace; no samples, so no gpu history.
    assert_eq!(files.len(), 3, "{files:?}");
    let steps: vllm_profiler_format::DetailedSteps = serde_json::from_slice(
        &std::fs::read(dir.path().join("detailed_steps_4242.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u64> = steps.detailed_steps.iter().map(|s| s.step_id).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    let first = &steps.detailed_steps[0];
    assert_eq!(
        (first.batch_size, first.num_tokens, first.thread_id),
        (4, 100, 7)
    );
    let attn = &first.layer_timings["model.layers.0.attn"];
    assert_eq!(attn.parent.as_deref(), Some("model.layers.0"));
    assert_eq!(attn.depth, 1);
    assert_eq!(first.layer_timings["model.layers.0"].depth, 0);
    assert!(first.layer_timings["model.layers.0"].parent.is_none());
    assert!(
        first.memory_used_mb.is_none(),
        "nothing sampled: null, not 0"
    );
}

#[test]
fn history_is_bounded_but_totals_cover_every_step() {
    let s = session(5);
    let mut rec = s.register_thread(1);
    for _ in 0..12 {
        let h = rec.step_begin(1, 10).unwrap();
        rec.step_end(h).unwrap();
    }
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.total_steps, 12);
    assert_eq!(summary.total_tokens, 120);
    assert_eq!(summary.counters.kept_steps, 5);
    assert_eq!(summary.counters.dropped_steps, 7);
    let last = s.summary(Some(3)).unwrap();
    assert_eq!(last.total_steps, 3);
    assert_eq!(last.last_n_steps, Some(3));
}

#[test]
fn bad_handles_are_errors_and_change_nothing() {
    let s = session(10);
    let mut rec = s.register_thread(1);
    assert!(matches!(
        rec.step_end(0),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    assert!(matches!(
        rec.step_end(12345),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    assert!(matches!(
        rec.span_end(99),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    let step = rec.step_begin(1, 1).unwrap();
    let span = rec.span_begin(b"x").unwrap();
    assert!(
        matches!(
            rec.step_end(span),
            Err(ProfilerError::UnknownHandle { kind: "step", .. })
        ),
        "a span handle is not a step handle"
    );
    rec.span_end(span).unwrap();
    assert!(
        matches!(rec.span_end(span), Err(ProfilerError::UnknownHandle { .. })),
        "ended twice"
    );
    rec.step_end(step).unwrap();
    assert!(matches!(
        rec.step_end(step),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    assert_eq!(rec.span_begin(b"").unwrap_err().code(), -2);
    assert_eq!(rec.span_begin(&[0xc3, 0x28]).unwrap_err().code(), -2);
    assert_eq!(s.summary(None).unwrap().total_steps, 1);
}

#[test]
fn handles_of_another_generation_are_rejected() {
    let old = Session::new(1, 1, Settings::default());
    let new = Session::new(1, 2, Settings::default());
    let mut old_rec = old.register_thread(1);
    let mut new_rec = new.register_thread(1);
    let h_old = old_rec.step_begin(1, 1).unwrap();
    let _h_new = new_rec.step_begin(1, 1).unwrap();
    assert!(
        new_rec.step_end(h_old).is_err(),
        "same sequence, other generation"
    );
}

#[test]
fn unclosed_spans_are_closed_by_their_parent_or_step_and_counted() {
    let s = session(10);
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let outer = rec.span_begin(b"outer").unwrap();
    let _leaked_inner = rec.span_begin(b"inner").unwrap();
    rec.span_end(outer).unwrap();
    let _leaked = rec.span_begin(b"tail").unwrap();
    rec.step_end(step).unwrap();
    assert_eq!(rec.open_counts(), (0, 0));
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.counters.auto_closed_spans, 2);
    assert_eq!(summary.counters.total_spans, 3);
    assert_eq!(summary.layer_performance["inner"].call_count, 1);
}

#[test]
fn overlapping_steps_on_one_thread_keep_their_own_spans() {
    let s = session(10);
    let mut rec = s.register_thread(1);
    let a = rec.step_begin(1, 1).unwrap();
    let span_a = rec.span_begin(b"in_a").unwrap();
    rec.span_end(span_a).unwrap();
    let b = rec.step_begin(2, 2).unwrap();
    let span_b = rec.span_begin(b"in_b").unwrap();
    rec.span_end(span_b).unwrap();
    rec.step_end(a).unwrap();
    rec.step_end(b).unwrap();
    let dir = tempfile::tempdir().unwrap();
    s.export(dir.path()).unwrap();
    let steps: vllm_profiler_format::DetailedSteps = serde_json::from_slice(
        &std::fs::read(dir.path().join("detailed_steps_4242.json")).unwrap(),
    )
    .unwrap();
    let names = |i: usize| {
        steps.detailed_steps[i]
            .layer_timings
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(steps.detailed_steps[0].batch_size, 1);
    assert_eq!(names(0), vec!["in_a"]);
    assert_eq!(names(1), vec!["in_b"]);
}

#[test]
fn spans_outside_steps_count_in_layer_performance_only() {
    let s = session(10);
    let mut rec = s.register_thread(1);
    let span = rec.span_begin(b"load_model").unwrap();
    rec.span_end(span).unwrap();
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.total_steps, 0);
    assert!(summary.avg_duration_ms.is_none());
    assert_eq!(summary.layer_performance["load_model"].call_count, 1);
}

#[test]
fn a_full_ring_loses_events_and_counts_each_one() {
    let s = session(100_000);
    let mut rec = s.register_thread(1);
    // Nobody drains: the ring holds RING_CAPACITY events, the rest are lost and counted.
    let total = vllm_profiler_core::recorder::RING_CAPACITY as u64 + 500;
    let mut lost = 0;
    for _ in 0..total {
        let h = rec.step_begin(1, 1).unwrap();
        if rec.step_end(h).is_err() {
            lost += 1;
        }
    }
    assert_eq!(lost, 500);
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.counters.lost_events, 500);
    assert_eq!(summary.total_steps, total - 500);
}

#[test]
fn threads_record_concurrently_with_exact_totals() {
    let s = session(1_000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut rec = s.register_thread(t);
                for i in 0..20_000u32 {
                    let h = rec.step_begin(1, 2).unwrap();
                    let span = rec.span_begin(b"layer").unwrap();
                    rec.span_end(span).unwrap();
                    assert!(rec.step_end(h).is_ok(), "drained below; step {i} lost");
                    if i % 512 == 0 {
                        s.drain().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.counters.lost_events, 0);
    assert_eq!(summary.total_steps, 80_000);
    assert_eq!(summary.total_tokens, 160_000);
    assert_eq!(summary.layer_performance["layer"].call_count, 80_000);
}

#[test]
fn nothing_recorded_writes_nothing() {
    let s = session(10);
    let dir = tempfile::tempdir().unwrap();
    assert!(s.export(&dir.path().join("out")).unwrap().is_empty());
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_handle_from_another_thread_is_rejected_even_with_the_same_sequence() {
    let s = session(10);
    let mut a = s.register_thread(1);
    let mut b = s.register_thread(2);
    let from_a = a.step_begin(1, 1).unwrap();
    let from_b = b.step_begin(2, 2).unwrap();
    assert_ne!(
        from_a, from_b,
        "same sequence number, different thread slots"
    );
    assert!(matches!(
        b.step_end(from_a),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    b.step_end(from_b).unwrap();
    a.step_end(from_a).unwrap();
    assert_eq!(s.summary(None).unwrap().total_steps, 2);
}

#[test]
fn steps_left_open_by_an_exiting_thread_are_counted() {
    let s = session(10);
    let s2 = s.clone();
    std::thread::spawn(move || {
        let mut rec = s2.register_thread(9);
        rec.step_begin(1, 1).unwrap();
        rec.step_begin(1, 1).unwrap();
    })
    .join()
    .unwrap();
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.total_steps, 0);
    assert_eq!(summary.counters.unfinished_steps, 2);
}

#[test]
fn percentiles_stay_within_min_and_max_and_last_n_counts_its_own_spans() {
    let (s, clock) = session_with_clock(100);
    let mut rec = s.register_thread(1);
    for i in 0..10u64 {
        let h = rec.step_begin(1, 1).unwrap();
        for _ in 0..i {
            let span = rec.span_begin(b"layer").unwrap();
            rec.span_end(span).unwrap();
        }
        clock.advance_ms(1 + i % 3);
        rec.step_end(h).unwrap();
    }
    let all = s.summary(None).unwrap();
    let max = all.max_duration_ms.unwrap();
    assert!(all.p99_duration_ms.unwrap() <= max, "{all:?}");
    assert!(all.p50_duration_ms.unwrap() >= all.min_duration_ms.unwrap());
    assert_eq!(all.counters.total_spans, 45);
    let last = s.summary(Some(2)).unwrap();
    assert_eq!(last.counters.total_spans, 8 + 9);
    assert_eq!(last.layer_performance["layer"].call_count, 17);
}

#[test]
fn leaked_steps_and_spans_never_stop_recording() {
    let s = session(10);
    let mut rec = s.register_thread(1);
    let limit = vllm_profiler_core::recorder::MAX_OPEN_STEPS as u64;
    for _ in 0..limit + 5 {
        rec.step_begin(1, 1).unwrap(); // an exception path that never ends its step
    }
    // Past the nesting limit a new span is refused; the open ones, the outermost first, stay.
    let depth = vllm_profiler_core::recorder::MAX_OPEN_SPANS;
    let root = rec.span_begin(b"root").unwrap();
    for _ in 1..depth {
        rec.span_begin(b"leaked").unwrap();
    }
    for _ in 0..3 {
        let refused = rec.span_begin(b"refused").unwrap_err();
        assert_eq!(refused.code(), -7, "{refused}");
    }
    assert_eq!(rec.open_counts(), (limit as usize, depth));
    rec.span_end(root).unwrap(); // closes every span opened inside it
    assert_eq!(rec.open_counts().1, 0);
    let step = rec.step_begin(4, 4).unwrap();
    let span = rec.span_begin(b"after").unwrap();
    rec.span_end(span).unwrap();
    rec.step_end(step).unwrap();
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.total_steps, 1);
    assert_eq!(summary.layer_performance["after"].call_count, 1);
    assert_eq!(
        summary.counters.unfinished_steps, 6,
        "5 over the limit + 1 for the new one"
    );
    assert_eq!(summary.counters.unfinished_spans, 0);
}

#[test]
fn thread_slots_are_reused_only_after_their_thread_exits() {
    let s = session(10);
    let mut main = s.register_thread(1);
    let main_step = main.step_begin(1, 1).unwrap();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let s2 = s.clone();
        handles.push(
            std::thread::spawn(move || {
                let mut rec = s2.register_thread(2);
                let h = rec.step_begin(1, 1).unwrap();
                rec.step_end(h).unwrap();
                h
            })
            .join()
            .unwrap(),
        );
    }
    // Each exited thread gave its slot back: the next one got the same slot.
    assert_eq!(handles[0], handles[1]);
    assert_eq!(handles[1], handles[2]);
    assert_ne!(handles[0], main_step, "never the slot of a live thread");
    main.step_end(main_step).unwrap();
}

#[test]
fn counts_set_inside_an_open_step_are_the_ones_recorded() {
    let s = session(10);
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(0, 0).unwrap();
    rec.step_set_counts(step, 6, 384).unwrap();
    rec.step_end(step).unwrap();
    // A closed step can no longer be changed.
    assert!(matches!(
        rec.step_set_counts(step, 1, 1),
        Err(ProfilerError::UnknownHandle { .. })
    ));
    assert!(rec.step_set_counts(0, 1, 1).is_err());
    let summary = s.summary(None).unwrap();
    assert_eq!(summary.total_steps, 1);
    assert_eq!(summary.total_batch_size, 6);
    assert_eq!(summary.total_tokens, 384);
}
