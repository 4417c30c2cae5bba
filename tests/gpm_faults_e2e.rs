//! GPM under a failing or hostile NVML (the fake's script), each case found by an outside
//! tester: a passing refusal, a failed metrics query, figures that are no percentage, a device
//! lost for a while, and a device whose process list fails. Exact sequences and warning counts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vllm_profiler_format::GpuSample;
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Frame `i`: SM activity `20 + i`, so a sample's figure names the frame it ends in.
fn frame(i: u32, own_mb: u64) -> Value {
    let i_f = f64::from(i);
    json!({
        "gpu_utilization": 40 + i, "memory_controller_utilization": 9,
        "memory_used_mb": 2048, "temperature": 50,
        "processes": [{"pid": "self", "used_memory_mb": own_mb}],
        "gpm": {"SM_UTIL": 20.0 + i_f, "SM_OCCUPANCY": 10.0, "ANY_TENSOR_UTIL": 5.0,
                "DRAM_BW_UTIL": 60.0},
    })
}

fn device(n: u32, frames: Vec<Value>) -> Value {
    json!({"name": format!("Fake H100 {n}"),
           "uuid": format!("GPU-00000000-0000-0000-0000-0000000000{n:02x}"),
           "memory_total_mb": 81920, "frames": frames})
}

fn run_with(dir: &Path, devices: Vec<Value>, steps: u32) -> (Vec<String>, Reports) {
    let out = dir.join("out");
    let script = json!({ "devices": devices });
    let mut cmd = profiled_on_fake_nvml("python3", dir, &out, &script, "0.05");
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .args(["timed", &steps.to_string(), "0.06"]);
    let run = run(&mut cmd, LIMIT);
    assert_success(&run);
    assert_eq!(run.stdout, "");
    let warnings = (run.stderr.lines())
        .filter(|l| l.starts_with("vllm-profiler:") && !l.contains("no-amd.so"))
        .map(str::to_owned)
        .collect();
    (warnings, read_reports(&out, run.pid))
}

fn active(samples: &[GpuSample]) -> Vec<Option<f64>> {
    samples.iter().map(|s| s.sm_active_percent).collect()
}

#[test]
fn a_passing_refusal_and_a_failed_query_null_one_sample_each_with_one_warning() {
    let frames = (0..12)
        .map(|i| {
            let mut f = frame(i, 512);
            match i {
                2 => f["errors"] = json!({"nvmlGpmSampleGet": 3}), // NOT_SUPPORTED, once
                5 => f["errors"] = json!({"nvmlGpmMetricsGet": 999}),
                _ => {}
            }
            f
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (warnings, reports) = run_with(dir.path(), vec![device(0, frames)], 12);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("sm_active_percent"), "{}", warnings[0]);
    // 2: refused, so 1 still opens the interval that 3 ends; 5: sampled but not computed,
    // so 5 opens the next one.
    assert_eq!(
        &active(&device_samples(&reports.history, 0))[..8],
        &[
            None,
            Some(21.0),
            None,
            Some(23.0),
            Some(24.0),
            None,
            Some(26.0),
            Some(27.0)
        ]
    );
}

#[test]
fn figures_that_are_no_percentage_are_null_and_rounding_reads_100() {
    let frames = (0..6)
        .map(|i| {
            let mut f = frame(i, 512);
            f["gpm"] = json!({"SM_UTIL": -5.0, "SM_OCCUPANCY": 1.7976931348623157e308,
                              "ANY_TENSOR_UTIL": 100.0000000001, "DRAM_BW_UTIL": 101.0});
            f
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (warnings, reports) = run_with(dir.path(), vec![device(0, frames)], 6);
    assert_eq!(warnings, Vec::<String>::new());
    let samples = device_samples(&reports.history, 0);
    assert!(samples.len() >= 3);
    for s in &samples[1..] {
        assert_eq!(
            (
                s.sm_active_percent,
                s.sm_occupancy_percent,
                s.dram_bandwidth_percent
            ),
            (None, None, None)
        );
        assert_eq!(s.tensor_active_percent, Some(100.0));
    }
}

#[test]
fn the_first_sample_after_a_lost_device_opens_a_new_interval() {
    let frames = (0..10)
        .map(|i| {
            let mut f = frame(i, 512);
            if (2..=5).contains(&i) {
                f["errors"] = json!({"nvmlDeviceGetUtilizationRates": 15}); // GPU_IS_LOST
            }
            f
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (warnings, reports) = run_with(dir.path(), vec![device(0, frames)], 12);
    assert_eq!(warnings.len(), 2, "lost, then back: {warnings:?}");
    assert_eq!(
        &active(&device_samples(&reports.history, 0))[..8],
        &[None, Some(21.0), None, None, None, None, None, Some(27.0)]
    );
}

#[test]
fn steps_never_carry_the_figures_of_a_device_this_process_does_not_use() {
    // Device 0 holds nothing of this process and is busy; device 1 holds its memory, and its
    // process list fails every third frame (memory unknown then).
    let busy = (0..12)
        .map(|i| {
            let mut f = frame(i, 0);
            f["processes"] = json!([]);
            f["gpm"]["SM_UTIL"] = json!(99.0);
            f
        })
        .collect();
    let own = (0..12)
        .map(|i| {
            let mut f = frame(i, 512);
            f["gpm"]["SM_UTIL"] = json!(1.0);
            if i % 3 == 2 {
                f["errors"] = json!({"nvmlDeviceGetComputeRunningProcesses_v3": 999,
                                     "nvmlDeviceGetComputeRunningProcesses_v2": 999});
            }
            f
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (_, reports) = run_with(dir.path(), vec![device(0, busy), device(1, own)], 12);
    let unknown = device_samples(&reports.history, 1)
        .iter()
        .filter(|s| s.process_memory_used_mb.is_none())
        .count();
    assert!(unknown >= 2, "the failing process list was sampled");
    let mut carried = 0;
    for step in &reports.steps.detailed_steps {
        for gpm in [&step.gpu_metrics.start_gpm, &step.gpu_metrics.end_gpm]
            .into_iter()
            .flatten()
        {
            carried += 1;
            assert_eq!(gpm.sm_active_percent, Some(1.0), "step {}", step.step_id);
        }
    }
    assert!(carried >= 12, "{carried}");
}
