//! One export of a full default-sized session: 10 000 kept steps (4 spans each, 2 levels
//! deep) and 10 000 samples of one device plus the host's, written to a temp dir through
//! `Session::export`, the path the agent's `vllm_profiler_export`, periodic exports and the
//! exit export all take (drain, summary, snapshot of the history under the lock; then the
//! three files streamed out, each written to a temp file and renamed).
//!
//! Run: `cargo bench --bench export -- --warm-up-time 1 --measurement-time 3`
//! Smoke (CI, seconds): `BENCH_SMOKE=1 cargo bench --bench export`
//! Figure: `p7/export_10k_steps_10k_samples`, time per export (target: at most 50 ms).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vllm_profiler_core::Session;

#[path = "common/session.rs"]
mod session;

fn p7(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = session::full_session(dir.path(), 10_000, 10_000);
    let mut group = c.benchmark_group("p7");
    group.sample_size(10);
    if std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0") {
        group
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(500));
    }
    group.bench_function("export_10k_steps_10k_samples", |b| {
        b.iter(|| export(&session, dir.path()))
    });
    group.finish();
    let steps = std::fs::metadata(
        dir.path()
            .join(vllm_profiler_format::detailed_steps_file_name(
                session.pid(),
            )),
    )
    .map(|m| m.len())
    .unwrap_or(0);
    eprintln!("export: detailed steps file {:.1} MB", steps as f64 / 1e6);
}

fn export(session: &Session, dir: &std::path::Path) {
    let written = session.export(dir).expect("export");
    assert_eq!(
        written.len(),
        4,
        "summary, detailed steps, trace, GPU history"
    );
}

criterion_group!(benches, p7);
criterion_main!(benches);
