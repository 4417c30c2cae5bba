//! The cost of the kernel level, on both sides.
//!
//! Run: `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3`
//! Smoke (CI, seconds): `BENCH_SMOKE=1 cargo bench --bench kernels`
//! Figures (criterion ids):
//! - `k1/parse_per_kernel`: our thread's work per kernel record: a buffer of launches as
//!   CUPTI writes them (external correlation, API and kernel record each) parsed, attributed
//!   and handed to a real session's inbox, per kernel record (target ≤ 100 ns);
//! - `k2/span_pair_correlating` vs `k2/span_pair_paused`: `vllm_profiler_span_begin` +
//!   `vllm_profiler_span_end` inside a step, through `dlopen`ed pointers, with the tracer
//!   holding the fake CUPTI (each begin and end pops one context and pushes another) and
//!   after `vllm_profiler_kernels_pause` (no push); the difference is the host's cost of the
//!   correlation (target ≤ 50 ns per span); `k2/fake_cupti_two_push_pop_pairs` is the
//!   fake library's own share of it (a real CUPTI's push and pop are a thread-local stack).
#![allow(unsafe_code)] // records written by hand; the C ABI through dlopen'ed pointers

use std::ffi::{c_char, CString};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vllm_profiler_core::names::NameId;
use vllm_profiler_core::{Session, Settings};
use vllm_profiler_cupti::layout::{self, Activity, ActivityApi, ActivityExternalCorrelation};
use vllm_profiler_cupti::layout::{ActivityKernel9, CuptiResult};
use vllm_profiler_cupti::parse::Parser;
use vllm_profiler_cupti::{SessionSink, Sink};

mod common;

/// Launches per buffer: about what one 1 MiB buffer holds.
const LAUNCHES: usize = 3800;
const NAMES: [&[u8]; 4] = [
    b"_Z6kernelPfi\0",
    b"triton_poi_fused_add_0\0",
    b"_ZN5flash13flash_fwd_kernelILi128EEEvNS_6ParamsE\0",
    b"ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn\0",
];

/// cuptiActivityGetNextRecord's contract, over records of the sizes in `layout`.
unsafe extern "C" fn next_record(
    buffer: *mut u8,
    valid_size: usize,
    record: *mut *mut Activity,
) -> CuptiResult {
    // SAFETY: `record` is the parser's, valid; the buffer holds `valid_size` bytes.
    unsafe {
        let offset = if (*record).is_null() {
            0
        } else {
            let at = (*record as usize) - buffer as usize;
            let size = layout::record_size((**record).kind).unwrap_or(8);
            at + size.next_multiple_of(layout::RECORD_ALIGNMENT)
        };
        if offset + 8 > valid_size {
            return layout::ERROR_MAX_LIMIT_REACHED;
        }
        *record = buffer.add(offset).cast();
        layout::SUCCESS
    }
}

/// A buffer of `LAUNCHES` launches, each an external correlation, an API and a kernel record.
fn filled_buffer() -> (Vec<u64>, usize) {
    let per = 24 + 40 + 208;
    let mut words = vec![0u64; LAUNCHES * per / 8];
    let base = words.as_mut_ptr().cast::<u8>();
    let mut at = 0usize;
    for i in 0..LAUNCHES {
        let corr = i as u32 + 1;
        let external = ActivityExternalCorrelation {
            kind: layout::kind::EXTERNAL_CORRELATION,
            external_kind: layout::EXTERNAL_KIND_CUSTOM2,
            external_id: vllm_profiler_core::kernel_context::encode(1234, 5, NameId(3)),
            correlation_id: corr,
            reserved: 0,
        };
        // SAFETY: each write is in bounds (sized above) and 8-aligned.
        unsafe {
            base.add(at)
                .cast::<ActivityExternalCorrelation>()
                .write(external)
        };
        at += 24;
        let api = ActivityApi {
            kind: layout::kind::RUNTIME,
            cbid: layout::runtime_cbid::LAUNCH_KERNEL_V7000,
            start: 0,
            end: 0,
            process_id: 1,
            thread_id: 1,
            correlation_id: corr,
            return_value: 0,
        };
        // SAFETY: as above.
        unsafe { base.add(at).cast::<ActivityApi>().write(api) };
        at += 40;
        // SAFETY: all-zero is a valid ActivityKernel9 (integers and null pointers).
        let mut kernel: ActivityKernel9 = unsafe { std::mem::zeroed() };
        kernel.kind = layout::kind::CONCURRENT_KERNEL;
        kernel.start = 1_000_000 + i as u64 * 10_000;
        kernel.end = kernel.start + 5_000;
        kernel.grid_x = 1 + (i % 3) as i32;
        (kernel.grid_y, kernel.grid_z) = (1, 1);
        (kernel.block_x, kernel.block_y, kernel.block_z) = (128, 1, 1);
        kernel.registers_per_thread = 32;
        kernel.correlation_id = corr;
        kernel.name = NAMES[i % NAMES.len()].as_ptr().cast::<c_char>();
        // SAFETY: as above.
        unsafe { base.add(at).cast::<ActivityKernel9>().write(kernel) };
        at += 208;
    }
    (words, at)
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    if common::smoke() {
        group
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10);
    }
}

fn k1(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        output_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    let session = Session::new(std::process::id(), 1, settings);
    // The agent's sink, without its warnings.
    let sink = SessionSink::new(session.clone(), |_| {});
    let (mut words, valid) = filled_buffer();
    let mut parser = Parser::default();
    let mut out = Vec::new();
    let mut group = c.benchmark_group("k1");
    configure(&mut group);
    group.throughput(Throughput::Elements(LAUNCHES as u64));
    group.bench_function("parse_per_kernel", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                // SAFETY: the buffer holds `valid` bytes of records `next_record` steps over.
                unsafe {
                    parser.parse(
                        next_record,
                        words.as_mut_ptr().cast(),
                        valid,
                        &sink,
                        &mut out,
                    )
                };
                sink.record(&out);
                total += start.elapsed();
                assert_eq!(out.len(), LAUNCHES);
                out.clear();
                // The collector's part, untimed: the inbox is emptied as it would be.
                drop(session.collect());
            }
            total
        })
    });
    group.finish();
}

type Pause = unsafe extern "C" fn() -> i32;
type Depth = unsafe extern "C" fn(u32) -> u32;
type Push = unsafe extern "C" fn(u32, u64) -> u32;
type Pop = unsafe extern "C" fn(u32, *mut u64) -> u32;

fn k2(c: &mut Criterion) {
    let fake = vllm_profiler_tests::fake_cupti_library();
    // Read by the agent's configuration when it is enabled, below; nothing else runs yet.
    std::env::set_var("VLLM_PROFILING_KERNELS", "1");
    std::env::set_var("VLLM_PROFILING_CUPTI_LIBRARY", fake);
    let abi = common::load(&common::library_path());
    let output = tempfile::tempdir().expect("temp dir");
    abi.enable_with(&serde_json::json!({
        "output_dir": output.path(),
        "enable_gpu_monitoring": false,
    }));
    // SAFETY: the agent stays loaded for the process (common::load leaks it), and the fake
    // is the library the agent loaded (same path, same handle).
    let (pause, resume, depth, push, pop) = unsafe {
        let agent = libloading::Library::new(common::library_path()).expect("agent");
        let fake = libloading::Library::new(fake).expect("fake CUPTI");
        let pause: Pause = *agent.get(b"vllm_profiler_kernels_pause").expect("pause");
        let resume: Pause = *agent.get(b"vllm_profiler_kernels_resume").expect("resume");
        let depth: Depth = *fake.get(b"fake_cupti_external_depth").expect("depth");
        let push: Push = *fake
            .get(b"cuptiActivityPushExternalCorrelationId")
            .expect("push");
        let pop: Pop = *fake
            .get(b"cuptiActivityPopExternalCorrelationId")
            .expect("pop");
        std::mem::forget((agent, fake));
        (pause, resume, depth, push, pop)
    };
    let name = CString::new("model.layers.0").unwrap();
    let span_pairs = |iters: u64| {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(1000);
            // SAFETY: the C ABI, called as its header says.
            let step = unsafe { (abi.step_begin)(1, 1) };
            let start = Instant::now();
            for _ in 0..n {
                // SAFETY: as above.
                unsafe {
                    let span = (abi.span_begin)(name.as_ptr());
                    black_box((abi.span_end)(span));
                }
            }
            total += start.elapsed();
            // SAFETY: as above.
            unsafe { (abi.step_end)(step) };
            abi.drain();
            left -= n;
        }
        total
    };
    // The tracer starts on its own thread: wait until a step's context reaches CUPTI.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: as above.
        let (step, pushed) = unsafe { ((abi.step_begin)(1, 1), depth(5)) };
        // SAFETY: as above.
        unsafe { (abi.step_end)(step) };
        if pushed == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the tracer never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut group = c.benchmark_group("k2");
    configure(&mut group);
    group.bench_function("span_pair_correlating", |b| b.iter_custom(span_pairs));
    // SAFETY: as above.
    assert_eq!(unsafe { pause() }, 0);
    group.bench_function("span_pair_paused", |b| b.iter_custom(span_pairs));
    // SAFETY: as above.
    assert_eq!(unsafe { resume() }, 0);
    // The fake's own cost of what a span pair calls: two pops and two pushes (on another
    // kind, so that the agent's stack is left alone).
    group.bench_function("fake_cupti_two_push_pop_pairs", |b| {
        b.iter(|| {
            let mut last = 0u64;
            // SAFETY: the fake's CUPTI functions with valid arguments.
            unsafe {
                for _ in 0..2 {
                    push(4, 7);
                    black_box(pop(4, &mut last));
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, k1, k2);
criterion_main!(benches);
