//! The C ABI as a host sees it: `libvllm_profiler.so` loaded with `dlopen`, its functions
//! called through pointers, profiling enabled with the sampler off (no sampler noise), next to
//! its floor and to a common Rust profiler.
//!
//! Run: `cargo bench --bench c_abi -- --warm-up-time 1 --measurement-time 3`
//! Smoke (CI, seconds): `BENCH_SMOKE=1 cargo bench --bench c_abi`
//! Figures (criterion ids; the runner reads target/criterion/<group>/<function>/new/):
//! - `p1/floor_clock_gettime_pair`: two `clock_gettime(CLOCK_MONOTONIC)`, what a step pair
//!   cannot avoid;
//! - `p1/c_abi_step_pair`: `vllm_profiler_step_begin` + `vllm_profiler_step_end`, one thread;
//! - `p1/puffin_scope`: one `puffin::profile_scope!`, scopes on;
//! - `p2/c_abi_step_pair_4_threads`: the same pair on 4 threads at once, time per pair per
//!   thread (compare with `p1/c_abi_step_pair`);
//! - `p1b/disabled_step_pair`: the pair after `vllm_profiler_disable` (both calls fail fast
//!   with VLLM_PROFILER_E_NOT_ENABLED: the handle is 0 and step_end returns -1);
//! - `p1b/atomic_load`: one Acquire load of an atomic word, the floor of a disabled call.
//!
//! Honest measurement: a tight loop of pairs outruns the agent's collector thread, and then
//! events take the "ring full" path (dropped and counted), which is not the cost of a real
//! step. So the recording benches time batches of at most `BATCH` pairs (one event each, well
//! under the ring's 8192) and drain every ring between batches, untimed, with
//! `vllm_profiler_summary_json(0, NULL, 0)` (a summary drains first). The agent's own collector
//! thread still runs and is still woken by the recorder every 1024 events, as in a real host.
//! At the end the bench checks, through the summary, that no event was lost.
#![allow(unsafe_code)] // it calls the C ABI through `dlopen`ed function pointers

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

mod common;
use common::Abi;

/// Pairs per timed batch: one step event each, far from filling a thread's ring (8192).
const BATCH: u64 = 1000;
/// Threads of `p2`.
const THREADS: usize = 4;
/// puffin scopes between two `new_frame` calls (untimed), so its buffers stay bounded.
const PUFFIN_FRAME: u64 = 1000;

struct Agent {
    abi: Abi,
    _output: tempfile::TempDir,
}

/// The library, loaded and enabled once per process.
fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let abi = common::load(&common::library_path());
        let output = tempfile::tempdir().expect("temp dir");
        abi.enable_with(&serde_json::json!({
            "output_dir": output.path(),
            "enable_gpu_monitoring": false,
        }));
        Agent {
            abi,
            _output: output,
        }
    })
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    if common::smoke() {
        group
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10);
    }
}

/// Times `iters` calls of `f` in batches of at most `BATCH`, running `between` untimed after
/// each batch.
fn batched(iters: u64, mut f: impl FnMut(), mut between: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        total += start.elapsed();
        between();
        left -= n;
    }
    total
}

fn clock_pair() -> (libc::timespec, libc::timespec) {
    let mut a = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut b = a;
    // SAFETY: clock_gettime writes one timespec through a valid, exclusive pointer.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut a);
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut b);
    }
    (a, b)
}

#[inline(never)]
fn puffin_scope() {
    puffin::profile_scope!("step");
    black_box(());
}

fn p1(c: &mut Criterion) {
    let abi = agent().abi;
    let mut group = c.benchmark_group("p1");
    configure(&mut group);
    group.bench_function("floor_clock_gettime_pair", |b| {
        b.iter(|| black_box(clock_pair()))
    });
    group.bench_function("c_abi_step_pair", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                || {
                    black_box(abi.step_pair());
                },
                || abi.drain(),
            )
        })
    });
    // puffin records a top-level scope into its thread's stream and, when the scope closes,
    // hands the stream to the global profiler (a mutex); `new_frame` every PUFFIN_FRAME
    // scopes, untimed, ends the frame so that nothing grows without bound.
    puffin::set_scopes_on(true);
    group.bench_function("puffin_scope", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(PUFFIN_FRAME);
                let start = Instant::now();
                for _ in 0..n {
                    puffin_scope();
                }
                total += start.elapsed();
                puffin::GlobalProfiler::lock().new_frame();
                left -= n;
            }
            total
        })
    });
    puffin::set_scopes_on(false);
    group.finish();
}

/// `THREADS` threads start each batch together (a barrier) and record `BATCH` pairs; after
/// every batch one of them drains all rings, untimed, while the others wait. Each thread adds
/// up its own timed batches; the figure is the slowest thread's total, per pair.
fn p2(c: &mut Criterion) {
    let abi = agent().abi;
    let mut group = c.benchmark_group("p2");
    configure(&mut group);
    group.bench_function("c_abi_step_pair_4_threads", |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(THREADS);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|i| {
                        let barrier = &barrier;
                        scope.spawn(move || {
                            // The thread's first call registers its recorder: not timed.
                            black_box(abi.step_pair());
                            let mut total = Duration::ZERO;
                            let mut left = iters;
                            while left > 0 {
                                let n = left.min(BATCH);
                                barrier.wait();
                                let start = Instant::now();
                                for _ in 0..n {
                                    black_box(abi.step_pair());
                                }
                                total += start.elapsed();
                                barrier.wait();
                                if i == 0 {
                                    abi.drain();
                                }
                                left -= n;
                            }
                            total
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("worker"))
                    .max()
                    .expect("threads")
            })
        })
    });
    group.finish();
    let summary = abi.summary();
    let lost = &summary["counters"]["lost_events"];
    eprintln!(
        "c_abi: {} steps recorded, {lost} events lost to full rings",
        summary["total_steps"]
    );
    assert_eq!(
        lost, 0,
        "an event took the ring-full path: the figures are not honest"
    );
}

fn p1b(c: &mut Criterion) {
    let abi = agent().abi;
    // SAFETY: takes no argument.
    let rc = unsafe { (abi.disable)() };
    assert!(rc == 0 || rc == -1, "vllm_profiler_disable: {rc}");
    assert_eq!(abi.step_pair(), -1, "disabled: step_end says not enabled");
    let mut group = c.benchmark_group("p1b");
    configure(&mut group);
    group.bench_function("disabled_step_pair", |b| {
        b.iter(|| black_box(abi.step_pair()))
    });
    static WORD: AtomicU64 = AtomicU64::new(0);
    group.bench_function("atomic_load", |b| {
        b.iter(|| black_box(black_box(&WORD).load(Ordering::Acquire)))
    });
    group.finish();
}

// p1b disables the agent, so it runs last.
criterion_group!(benches, p1, p2, p1b);
criterion_main!(benches);
