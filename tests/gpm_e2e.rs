//! GPM end to end: the agent preloaded into `python3` samples the fake NVML's GPM functions
//! (two samples per interval, as on a Hopper GPU); GPU history and steps carry the scripted
//! figures exactly, and a device or library without GPM gives nulls and no warning.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vllm_profiler_format::GpuSample;
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(60);
const FRAMES: u32 = 8;

/// Frame `i` of the GPM device; frame 3 lacks the tensor figure (the device does not give it
/// that interval).
fn gpm_frame(i: u32) -> Value {
    let i = f64::from(i);
    let mut gpm = json!({
        "SM_UTIL": 20.5 + i, "SM_OCCUPANCY": 10.0 + i / 3.0,
        "ANY_TENSOR_UTIL": 5.5 + i, "DRAM_BW_UTIL": 60.0 + i * 2.5,
    });
    if i == 3.0 {
        gpm.as_object_mut().unwrap().remove("ANY_TENSOR_UTIL");
    }
    json!({
        "gpu_utilization": 40 + i as u32, "memory_controller_utilization": 9,
        "memory_used_mb": 2048, "temperature": 50,
        "processes": [{"pid": "self", "used_memory_mb": 512}],
        "gpm": gpm,
    })
}

fn script(omit: &[&str]) -> Value {
    json!({
        "omit_symbols": omit,
        "devices": [
            {"name": "Fake H100", "uuid": "GPU-00000000-0000-0000-0000-0000000000a0",
             "memory_total_mb": 81920,
             "frames": (0..FRAMES).map(gpm_frame).collect::<Vec<_>>()},
            {"name": "Fake A100", "uuid": "GPU-00000000-0000-0000-0000-0000000000b0",
             "memory_total_mb": 40960,
             "frames": [{"gpu_utilization": 3, "memory_controller_utilization": 1,
                         "memory_used_mb": 100}]},
        ]
    })
}

fn run_steps(dir: &Path, script: &Value) -> (Finished, Reports) {
    let out = dir.join("out");
    let mut cmd = profiled_on_fake_nvml("python3", dir, &out, script, "0.05");
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .args(["timed", "12", "0.06"]);
    let run = run(&mut cmd, LIMIT);
    assert_success(&run);
    let reports = read_reports(&out, run.pid);
    (run, reports)
}

/// Agent lines other than the one about the absent amd-smi the test points at.
fn unexpected_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("vllm-profiler:") && !l.contains("no-amd.so"))
        .collect()
}

#[test]
fn gpm_figures_are_sampled_exactly_and_steps_carry_them() {
    let dir = tempfile::tempdir().unwrap();
    let script = script(&[]);
    let (run, reports) = run_steps(dir.path(), &script);
    assert_eq!(unexpected_warnings(&run.stderr), Vec::<&str>::new());

    let frames = script["devices"][0]["frames"].as_array().unwrap();
    let gpm_device = device_samples(&reports.history, 0);
    assert!(gpm_device.len() >= 4, "{} samples", gpm_device.len());
    for (n, sample) in gpm_device.iter().enumerate() {
        let mut expected = GpuSample {
            timestamp: sample.timestamp,
            ..expected_gpu_sample(0, 81920.0, &frames[n.min(frames.len() - 1)])
        };
        if n == 0 {
            // The first sample opens the first interval: no GPM figure yet.
            assert_eq!(
                expected.gpm().map(|g| g.sm_active_percent.is_some()),
                Some(true)
            );
            (expected.sm_active_percent, expected.sm_occupancy_percent) = (None, None);
            (
                expected.tensor_active_percent,
                expected.dram_bandwidth_percent,
            ) = (None, None);
        }
        assert_eq!(sample, &expected, "sample {n}");
    }
    assert_eq!(gpm_device[3].tensor_active_percent, None);
    assert_eq!(gpm_device[3].sm_active_percent, Some(23.5));
    assert_eq!(gpm_device[4].tensor_active_percent, Some(9.5));

    let plain_device = device_samples(&reports.history, 1);
    assert_eq!(plain_device.len(), gpm_device.len());
    assert!(plain_device.iter().all(|s| s.gpm().is_none()));

    // Steps take the figures of device 0, where this process holds memory, in its newest
    // sample at each moment.
    let at = |unix: f64| {
        let taken = gpm_device.partition_point(|s| s.timestamp <= unix);
        taken.checked_sub(1).and_then(|i| gpm_device[i].gpm())
    };
    let mut carried = 0;
    for step in &reports.steps.detailed_steps {
        let end = step.start_time + step.duration_ms / 1000.0;
        assert_eq!(
            step.gpu_metrics.start_gpm,
            at(step.start_time),
            "step {}",
            step.step_id
        );
        // The end is computed from nanoseconds, so compare with a microsecond's leeway.
        let end_figures = step.gpu_metrics.end_gpm;
        assert!(
            end_figures == at(end - 1e-6) || end_figures == at(end + 1e-6),
            "step {}: {end_figures:?}",
            step.step_id
        );
        carried += usize::from(step.gpu_metrics.start_gpm.is_some());
    }
    assert!(carried >= 8, "{carried} of 12 steps began with GPM figures");
}

#[test]
fn a_library_without_every_gpm_function_gives_nulls_and_no_warning() {
    for missing in [
        "nvmlGpmSampleFree",
        "nvmlGpmMetricsGet",
        "nvmlGpmQueryDeviceSupport",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (run, reports) = run_steps(dir.path(), &script(&[missing]));
        assert_eq!(
            unexpected_warnings(&run.stderr),
            Vec::<&str>::new(),
            "{missing}"
        );
        let samples = device_samples(&reports.history, 0);
        assert!(samples.len() >= 4, "{missing}");
        assert!(samples.iter().all(|s| s.gpm().is_none()), "{missing}");
        assert!(
            samples.iter().all(|s| s.gpu_utilization.is_some()),
            "{missing}"
        );
        let steps = &reports.steps.detailed_steps;
        assert!(
            steps.iter().all(|s| s.gpu_metrics.start_gpm.is_none()),
            "{missing}"
        );
    }
}

#[test]
fn a_failing_gpm_sample_nulls_that_interval_with_one_warning_and_sampling_goes_on() {
    let mut script = script(&[]);
    for n in [2, 3] {
        script["devices"][0]["frames"][n]["errors"] = json!({"nvmlGpmSampleGet": 999});
    }
    let dir = tempfile::tempdir().unwrap();
    let (run, reports) = run_steps(dir.path(), &script);
    let warnings = unexpected_warnings(&run.stderr);
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("sm_active_percent"), "{}", warnings[0]);
    let samples = device_samples(&reports.history, 0);
    let active: Vec<Option<f64>> = samples.iter().map(|s| s.sm_active_percent).collect();
    // 0: opens an interval; 2, 3: failed, so 1 still opens it; 4: the figures of the longer
    // interval from 1, which the fake gives as frame 4's.
    assert_eq!(
        &active[..6],
        &[None, Some(21.5), None, None, Some(24.5), Some(25.5)]
    );
}
