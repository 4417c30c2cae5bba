//! Cost of one step begin+end pair in the recorder, next to its floor: the two monotonic
//! clock reads it cannot avoid, and with a span inside, plain or annotated.
//! Run: cargo bench --bench step_overhead
//! (The side-by-side overhead suite of the C ABI, Python and the sampler is issue 5's.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use vllm_profiler_core::{Session, Settings, ThreadRecorder};

fn step_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("step_pair");
    group.bench_function("floor: two Instant::now()", |b| {
        b.iter(|| {
            let start = Instant::now();
            std::hint::black_box(start.elapsed())
        })
    });

    let session = Session::new(std::process::id(), 1, Settings::default());
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (session, stop) = (session.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = session.drain();
                std::thread::park_timeout(Duration::from_millis(5));
            }
        })
    };
    session.set_collector_thread(Some(collector.thread().clone()));
    let mut recorder = session.register_thread(1);
    group.bench_function("recorder: step_begin + step_end", |b| {
        b.iter(|| {
            let h = recorder.step_begin(8, 128).unwrap();
            std::hint::black_box(recorder.step_end(h))
        })
    });
    group.bench_function("recorder: step with one nested span", |b| {
        b.iter(|| {
            let h = recorder.step_begin(8, 128).unwrap();
            let s = recorder.span_begin(b"model.layers.0").unwrap();
            let _ = recorder.span_end(s);
            std::hint::black_box(recorder.step_end(h))
        })
    });
    // Issue 17's device time: the span's CUDA event pair resolved after its end, handed over
    // by handle (the recorder finds the span among the last it ended).
    group.bench_function(
        "recorder: step with one nested span and its device time",
        |b| {
            b.iter(|| {
                let h = recorder.step_begin(8, 128).unwrap();
                let s = recorder.span_begin(b"model.layers.0").unwrap();
                let _ = recorder.span_end(s);
                let _ = recorder.step_end(h);
                std::hint::black_box(recorder.span_set_gpu_duration(s, 1_000))
            })
        },
    );
    // Seed 004's layer annotations: a memory delta and the same shapes string every time (the
    // common case, a model at a steady batch shape): one hash lookup of the raw bytes.
    let shapes = br#"{"input_shapes":[[8,512,768]],"output_shapes":[[8,512,768]]}"#;
    group.bench_function(
        "recorder: step with one annotated span (memory delta + repeated shapes)",
        |b| {
            b.iter(|| {
                let h = recorder.step_begin(8, 128).unwrap();
                let s = recorder.span_begin(b"model.layers.0").unwrap();
                let _ = recorder.span_end_annotated(s, 64.25, Some(shapes));
                std::hint::black_box(recorder.step_end(h))
            })
        },
    );
    group.finish();
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    let summary = session.summary(None).unwrap();
    eprintln!(
        "recorded {} steps, {} events lost to full rings",
        summary.total_steps, summary.counters.lost_events
    );
}

/// The recording thread's own cost, apart from the collector: batches of at most 1000
/// iterations are timed, and the rings are drained between them, untimed, on this thread. So
/// no event takes the "ring full" path and no collector thread competes for the cores, which
/// makes these figures steadier than `step_pair`'s on a small machine.
fn hot_path(c: &mut Criterion) {
    const BATCH: u64 = 1000;
    let mut group = c.benchmark_group("hot_path");
    let session = Session::new(std::process::id(), 1, Settings::default());
    let mut recorder = session.register_thread(1);
    let mut timed = |b: &mut criterion::Bencher, f: &mut dyn FnMut(&mut ThreadRecorder)| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let start = Instant::now();
                for _ in 0..n {
                    f(&mut recorder);
                }
                total += start.elapsed();
                session.drain().unwrap();
                left -= n;
            }
            total
        })
    };
    group.bench_function("step_begin + step_end", |b| {
        timed(b, &mut |r| {
            let h = r.step_begin(8, 128).unwrap();
            std::hint::black_box(r.step_end(h)).unwrap();
        })
    });
    group.bench_function("step with one nested span", |b| {
        timed(b, &mut |r| {
            let h = r.step_begin(8, 128).unwrap();
            let s = r.span_begin(b"model.layers.0").unwrap();
            r.span_end(s).unwrap();
            std::hint::black_box(r.step_end(h)).unwrap();
        })
    });
    let shapes = br#"{"input_shapes":[[8,512,768]],"output_shapes":[[8,512,768]]}"#;
    group.bench_function(
        "step with one annotated span (memory delta + repeated shapes)",
        |b| {
            timed(b, &mut |r| {
                let h = r.step_begin(8, 128).unwrap();
                let s = r.span_begin(b"model.layers.0").unwrap();
                r.span_end_annotated(s, 64.25, Some(shapes)).unwrap();
                std::hint::black_box(r.step_end(h)).unwrap();
            })
        },
    );
    group.bench_function("step with one span, memory delta only", |b| {
        timed(b, &mut |r| {
            let h = r.step_begin(8, 128).unwrap();
            let s = r.span_begin(b"model.layers.0").unwrap();
            r.span_end_annotated(s, 64.25, None).unwrap();
            std::hint::black_box(r.step_end(h)).unwrap();
        })
    });
    group.finish();
    let summary = session.summary(None).unwrap();
    assert_eq!(
        summary.counters.lost_events, 0,
        "no event took the ring-full path"
    );
}

criterion_group!(benches, step_pair, hot_path);
criterion_main!(benches);
