//! The per-step hot path does not allocate once warm: counted with a counting global
//! allocator (allocation-counter), which is why this test has a binary of its own.

use vllm_profiler_core::{Session, Settings};

#[test]
fn warm_steps_and_spans_do_not_allocate() {
    let session = Session::new(1, 1, Settings::default());
    let mut recorder = session.register_thread(1);
    let round = |recorder: &mut vllm_profiler_core::ThreadRecorder| {
        let step = recorder.step_begin(8, 128).unwrap();
        let outer = recorder.span_begin(b"model.layers.0").unwrap();
        let inner = recorder.span_begin(b"model.layers.0.mlp").unwrap();
        // Annotated, with a shapes string this thread has seen: a cache hit.
        recorder
            .span_end_annotated(inner, 2.5, Some(br#"{"input_shapes": [[8, 128]]}"#))
            .unwrap();
        recorder.span_end(outer).unwrap();
        // Left open on purpose: closed by the step (the auto-close path).
        recorder.span_begin(b"sampler").unwrap();
        recorder.step_end(step).unwrap();
        // Device times that come after the ends (a CUDA event pair resolved late).
        recorder.span_set_gpu_duration(outer, 3_000_000).unwrap();
        recorder.step_set_gpu_duration(step, 4_000_000).unwrap();
    };
    // Warm up: the first call interns the names and the shapes and sizes the vectors.
    round(&mut recorder);
    session.drain().unwrap();

    let counts = allocation_counter::measure(|| {
        for _ in 0..500 {
            round(&mut recorder);
        }
    });
    assert_eq!(counts.count_total, 0, "{counts:?}");

    session.drain().unwrap();
    let summary = session.summary(None).unwrap();
    assert_eq!(summary.total_steps, 501);
    assert_eq!(summary.counters.auto_closed_spans, 501);
    assert_eq!(summary.counters.lost_events, 0);
    let inner = &summary.layer_performance["model.layers.0.mlp"];
    assert_eq!(inner.avg_memory_delta_mb, Some(2.5));
    let outer = &summary.layer_performance["model.layers.0"];
    assert_eq!(outer.avg_gpu_duration_ms, Some(3.0));
    assert_eq!(summary.counters.unmatched_gpu_durations, 0);
}
