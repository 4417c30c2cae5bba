//! Cost of one step begin+end pair in the recorder, next to its floor: the two monotonic
//! clock reads it cannot avoid. Run: cargo bench --bench step_overhead
//! (The side-by-side overhead suite of the C ABI, Python and the sampler is issue 5's.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use vllm_profiler_core::{Session, Settings};

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
    group.finish();
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    let summary = session.summary(None).unwrap();
    eprintln!(
        "recorded {} steps, {} events lost to full rings",
        summary.total_steps, summary.counters.lost_events
    );
}

criterion_group!(benches, step_pair);
criterion_main!(benches);
