//! What the crash-safe journal costs the collector thread (never the recording threads: they
//! only push into their rings).
//!
//! - `p10/collect_1000_steps_journal_{off,on}`: 1000 steps of 5 events each recorded, then one
//!   collector turn (`Session::collect`): without the journal a drain, with it a drain plus one
//!   appended batch. The difference over 5000 is the journal's cost per event.
//! - `p10/snapshot_10k_steps`: one snapshot of a full default history (10 000 kept steps, 10 000
//!   samples), what the journal writes when it starts and at each compaction (every 32 MiB).
//!
//! Run: `cargo bench --bench journal -- --warm-up-time 1 --measurement-time 3`
//! Smoke (CI, seconds): `BENCH_SMOKE=1 cargo bench --bench journal`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vllm_profiler_core::{Session, Settings};

#[path = "common/session.rs"]
mod session;

fn journaled(dir: &std::path::Path, journal: bool) -> Arc<Session> {
    Session::new(
        std::process::id(),
        1,
        Settings {
            output_dir: dir.to_path_buf(),
            gpu_monitoring: false,
            journal,
            ..Settings::default()
        },
    )
}

fn p10(c: &mut Criterion) {
    let mut group = c.benchmark_group("p10");
    group.sample_size(20);
    if std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0") {
        group
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(500));
    }
    for journal in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = journaled(dir.path(), journal);
        let mut recorder = s.register_thread(1);
        let name = if journal {
            "collect_1000_steps_journal_on"
        } else {
            "collect_1000_steps_journal_off"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..1000 {
                    session::record_step_with_spans(&mut recorder, i);
                }
                assert_eq!(s.collect().failure, None);
            })
        });
        let log = dir
            .path()
            .join(vllm_profiler_core::journal::log_file_name(s.pid()));
        assert_eq!(log.exists(), journal, "the journal is written only when on");
        // Reports: nothing lost, every step in.
        let summary = s.summary(None).expect("summary");
        assert_eq!(summary.counters.lost_events, 0);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let full = session::full_session(dir.path(), 10_000, 10_000);
    full.set_settings(Settings {
        journal: true,
        ..full.settings()
    });
    group.bench_function("snapshot_10k_steps", |b| {
        b.iter(|| {
            // A retired journal starts again with a snapshot at the next turn.
            full.retire_journal();
            assert_eq!(full.collect().failure, None);
        })
    });
    let snapshot = dir
        .path()
        .join(vllm_profiler_core::journal::snapshot_file_name(full.pid()));
    let bytes = std::fs::metadata(&snapshot).map(|m| m.len()).unwrap_or(0);
    assert!(bytes > 0, "the snapshot was written");
    eprintln!(
        "journal: snapshot of 10 000 steps is {:.1} MB",
        bytes as f64 / 1e6
    );
    group.finish();
}

criterion_group!(benches, p10);
criterion_main!(benches);
