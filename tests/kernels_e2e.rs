//! The kernel level end to end: the real agent, preloaded into a C program, traces the kernels
//! the fake CUPTI (`crates/fake-cupti`) makes through the real buffer protocol, and the
//! reports carry exactly those kernels, attributed to their steps and spans. The refusals
//! (another CUPTI client, an unknown version, Nsight) leave kernels untraced with one warning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

fn program(dir: &Path) -> PathBuf {
    compile_c(&workspace_root().join("tests/data/kernel_launches.c"), dir)
}

/// Runs the program with kernels traced on the fake CUPTI scripted by `script`.
fn traced(dir: &Path, args: &[&str], script: &str, extra: &[(&str, &str)]) -> Finished {
    let exe = program(dir);
    let mut cmd = profiled_command(&exe, &dir.join("reports"));
    cmd.args(args)
        .env("VLLM_PROFILING_KERNELS", "1")
        .env("VLLM_PROFILING_CUPTI_LIBRARY", fake_cupti_library())
        .env("FAKE_CUPTI_PATH", fake_cupti_library())
        .env("FAKE_CUPTI_SCRIPT", script)
        .env_remove("CUDA_INJECTION64_PATH")
        .env_remove("NSYS_PROFILING_SESSION_ID");
    for (key, value) in extra {
        cmd.env(key, value);
    }
    run(&mut cmd, LIMIT)
}

fn warmup(finished: &Finished) -> u64 {
    finished
        .stdout
        .strip_prefix("warmup ")
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no warm-up count in {:?}", finished.stdout))
}

#[test]
fn every_kernel_is_reported_exactly_and_attributed_to_its_step() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 12u64;
    let finished = traced(tmp.path(), &["run", &n.to_string()], "{}", &[]);
    assert_success(&finished);
    assert_eq!(finished.stderr, "", "no warning where CUPTI works");
    let warm = warmup(&finished);
    let reports = read_reports(&tmp.path().join("reports"), finished.pid);
    let counters = &reports.summary.counters;
    assert_eq!(counters.kernel_records, 2 * n + 4);
    assert_eq!(
        counters.unattributed_kernels, 1,
        "the one launched outside steps"
    );
    assert_eq!(counters.dropped_kernel_records, 0);
    assert_eq!(counters.lost_kernel_records, 0);

    let kernels = reports
        .summary
        .kernel_performance
        .as_ref()
        .expect("kernels");
    let names: Vec<&str> = kernels.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "graph_kernel",
            "kernel(float*, int)",
            "outside_kernel",
            "triton_poi_fused_add_0"
        ]
    );
    let mangled = &kernels["kernel(float*, int)"];
    assert_eq!(mangled.call_count, n);
    assert!((mangled.total_duration_ms - n as f64).abs() < 1e-9);
    assert!((mangled.max_duration_ms - 1.0).abs() < 1e-9);
    assert_eq!(mangled.graph_launches, 0);
    let launch = mangled.launch.as_ref().expect("launch configuration");
    assert_eq!((launch.grid, launch.block), ([2, 3, 4], [128, 1, 1]));
    assert_eq!(launch.registers_per_thread, 32);
    assert_eq!(
        (
            launch.static_shared_memory_bytes,
            launch.dynamic_shared_memory_bytes
        ),
        (1024, 2048)
    );
    let triton = &kernels["triton_poi_fused_add_0"];
    assert_eq!(triton.call_count, n);
    assert!((triton.total_duration_ms - 0.5 * n as f64).abs() < 1e-9);
    assert_eq!(triton.launch.as_ref().unwrap().grid, [1, 1, 1]);
    let graph = &kernels["graph_kernel"];
    assert_eq!((graph.call_count, graph.graph_launches), (3, 3));
    assert_eq!(kernels["outside_kernel"].call_count, 1);

    let steps = &reports.steps.detailed_steps;
    assert_eq!(steps.len() as u64, warm + 1 + n + 1);
    for step in &steps[..=warm as usize] {
        assert_eq!((step.kernel_count, step.device_busy_ms), (0, None));
    }
    for step in &steps[warm as usize + 1..steps.len() - 1] {
        assert_eq!(step.kernel_count, 2);
        let busy = step.device_busy_ms.expect("busy time");
        assert!((busy - 1.5).abs() < 1e-9, "busy {busy}");
        let top = step.top_kernels.as_ref().expect("top kernels");
        let top: Vec<(&str, u32)> = top
            .iter()
            .map(|k| (k.name.as_str(), k.call_count))
            .collect();
        assert_eq!(
            top,
            [("kernel(float*, int)", 1), ("triton_poi_fused_add_0", 1)]
        );
    }
    let last = steps.last().unwrap();
    assert_eq!(last.kernel_count, 3);
    assert!((last.device_busy_ms.unwrap() - 0.75).abs() < 1e-9);

    let kernel_events: Vec<_> = reports
        .trace
        .trace_events
        .iter()
        .filter(|e| e.cat.as_deref() == Some("kernel"))
        .collect();
    assert_eq!(kernel_events.len() as u64, 2 * n + 4);
    let in_span = kernel_events
        .iter()
        .filter(|e| e.name == "kernel(float*, int)")
        .filter(|e| {
            matches!(e.args.get("span"), Some(vllm_profiler_format::TraceArg::Text(s)) if s == "model.layers.0")
        })
        .count();
    assert_eq!(in_span as u64, n, "each launch in the span carries it");
}

#[test]
fn pausing_releases_cupti_and_resuming_takes_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = traced(tmp.path(), &["pause"], "{}", &[]);
    assert_success(&finished);
    assert_eq!(finished.stderr, "");
    let reports = read_reports(&tmp.path().join("reports"), finished.pid);
    let kernels = reports
        .summary
        .kernel_performance
        .as_ref()
        .expect("kernels");
    assert!(!kernels.contains_key("while_paused"), "{kernels:?}");
    assert_eq!(kernels["after_resume"].call_count, 3);
    assert_eq!(reports.summary.counters.kernel_records, 4 + 3);
}

fn assert_refused(finished: &Finished, reason: &str) {
    assert_success(finished);
    let lines: Vec<&str> = finished.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one warning: {:?}", finished.stderr);
    assert!(
        lines[0].contains("CUDA kernels are not traced") && lines[0].contains(reason),
        "{:?}",
        lines[0]
    );
}

#[test]
fn another_cupti_client_leaves_kernels_untraced_with_one_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = traced(tmp.path(), &["refused"], r#"{"subscribe_error": 39}"#, &[]);
    assert_refused(&finished, "another CUPTI client");
    let reports = read_reports(&tmp.path().join("reports"), finished.pid);
    assert_eq!(reports.summary.kernel_performance, None);
    assert_eq!(reports.summary.counters.kernel_records, 0);
    assert_eq!(reports.steps.detailed_steps.len(), 20);
}

#[test]
fn an_unknown_cupti_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = traced(tmp.path(), &["refused"], r#"{"version": 17}"#, &[]);
    assert_refused(&finished, "version 17");
}

#[test]
fn under_nsight_kernel_tracing_stays_off() {
    let tmp = tempfile::tempdir().unwrap();
    let nsight = [("NSYS_PROFILING_SESSION_ID", "7")];
    let finished = traced(tmp.path(), &["refused"], "{}", &nsight);
    assert_refused(&finished, "NSYS_PROFILING_SESSION_ID");
}

#[test]
fn a_missing_cupti_function_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"{"omit_symbols": ["cuptiActivityFlushAll"]}"#;
    let finished = traced(tmp.path(), &["refused"], script, &[]);
    assert_refused(&finished, "cuptiActivityFlushAll");
}

#[test]
fn a_failing_enable_leaves_nothing_half_on() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"{"enable_errors": {"EXTERNAL_CORRELATION": 27}}"#;
    let finished = traced(tmp.path(), &["refused"], script, &[]);
    assert_refused(&finished, "cuptiActivityEnable failed with code 27");
}
