//! Concurrency: 16 threads record 1 M spans each (100 to a step) through the C ABI while the
//! main thread exports every 2 ms and turns profiling off and on every 20 ms. Every span and
//! step that began is ended by an explicit call (retried while profiling is off), so the
//! counts are exact: each end the library accepted is in the totals, each it refused as
//! buffer-full is in `lost_events`, and nothing else is lost, duplicated or left open.

use std::collections::BTreeMap;
use std::time::Duration;

use vllm_profiler_tests::*;

const THREADS: u64 = 16;
const SPANS_EACH: u64 = 1_000_000;
const SPANS_PER_STEP: u64 = 100;

#[test]
fn sixteen_threads_of_a_million_spans_with_exports_and_disable_enable_count_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(&workspace_root().join("tests/data/stress.c"), tmp.path());
    let out = tmp.path().join("reports");
    let mut cmd = profiled_command(&exe, &out);
    cmd.args([THREADS, SPANS_EACH, SPANS_PER_STEP].map(|n| n.to_string()))
        // No sampler: the CPU is the recorders'.
        .env("VLLM_ENABLE_GPU_MONITORING", "0");
    let child = run(&mut cmd, Duration::from_secs(600));
    assert_success(&child);
    let counts: BTreeMap<&str, u64> = {
        let fields: Vec<&str> = child.stdout.split_whitespace().collect();
        fields
            .chunks(2)
            .map(|pair| (pair[0], pair[1].parse().expect("a count")))
            .collect()
    };
    let steps_each = SPANS_EACH.div_ceil(SPANS_PER_STEP);
    assert_eq!(
        counts["spans_ok"] + counts["spans_lost"],
        THREADS * SPANS_EACH,
        "{counts:?}"
    );
    assert_eq!(
        counts["steps_ok"] + counts["steps_lost"],
        THREADS * steps_each,
        "{counts:?}"
    );
    assert!(
        counts["cycles"] >= 1,
        "profiling was never turned off: {counts:?}"
    );
    assert!(counts["exports"] >= 1, "{counts:?}");

    let summary: vllm_profiler_format::PerformanceSummary = serde_json::from_value(read_json(
        &out.join(vllm_profiler_format::summary_file_name(child.pid)),
    ))
    .expect("summary schema");
    let c = &summary.counters;
    assert_eq!(c.total_spans, counts["spans_ok"], "{c:?}");
    assert_eq!(summary.total_steps, counts["steps_ok"], "{c:?}");
    assert_eq!(
        c.lost_events,
        counts["spans_lost"] + counts["steps_lost"],
        "{c:?}"
    );
    assert_eq!(summary.total_tokens, 2 * counts["steps_ok"]);
    assert_eq!(
        (c.auto_closed_spans, c.unfinished_spans, c.unfinished_steps),
        (0, 0, 0),
        "{c:?}"
    );
    // The bounded history keeps the newest steps and counts the rest.
    assert_eq!(c.kept_steps + c.dropped_steps, counts["steps_ok"], "{c:?}");
    eprintln!("{}", child.stdout.trim());
}
