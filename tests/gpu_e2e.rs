//! GPU sampling end to end: the agent preloaded into `python3` samples the fake NVML (and the
//! fake amd-smi) with scripted values; the reports, the CLI and pynvml are checked against the
//! script. The real-GPU test runs only where `nvidia-smi` exists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use vllm_profiler_format::{GpuSample, MemorySource};
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(60);
const INTERVAL: f64 = 0.05;

fn python_script() -> PathBuf {
    workspace_root().join("tests/data/record_steps.py")
}

/// One scripted frame: every figure derived from `base`, so that frames and devices differ.
fn frame(base: u32, own_mb: Option<u64>) -> Value {
    let mut frame = json!({
        "gpu_utilization": base,
        "memory_controller_utilization": base / 2,
        "memory_used_mb": 1000 + u64::from(base) * 10,
        "temperature": 30 + base / 4,
        "power_draw_mw": 50_000 + base * 1250,
        "power_limit_mw": 300_000 + base,
        "sm_clock_mhz": 1000 + base,
        "memory_clock_mhz": 2000 + base,
    });
    if let Some(mb) = own_mb {
        frame["processes"] =
            json!([{"pid": "self", "used_memory_mb": mb}, {"pid": 1, "used_memory_mb": 7}]);
    }
    frame
}

/// Two devices, `frames` frames each. This process holds memory on device 1 only, so steps
/// must take their figures from device 1.
fn two_device_script(frames: u32) -> Value {
    json!({
        "devices": [
            {"name": "Fake GPU Zero", "uuid": "GPU-00000000-1111-2222-3333-444444444444",
             "memory_total_mb": 81920,
             "frames": (0..frames).map(|i| frame(10 + i, None)).collect::<Vec<_>>()},
            {"name": "Fake GPU One", "uuid": "GPU-11111111-1111-2222-3333-444444444444",
             "memory_total_mb": 40960,
             "frames": (0..frames).map(|i| frame(60 + i, Some(100 + u64::from(i)))).collect::<Vec<_>>()},
        ]
    })
}

struct Scripted {
    dir: tempfile::TempDir,
}

impl Scripted {
    fn new(script: &Value) -> Scripted {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nvml.json"), script.to_string()).unwrap();
        Scripted { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("nvml.json")
    }

    /// `python3 record_steps.py timed STEPS SECONDS` profiled, sampling the fake NVML.
    fn run_python(&self, steps: u32, seconds: f64, extra_env: &[(&str, &str)]) -> Finished {
        let mut cmd = profiled_command("python3", &self.out());
        cmd.arg(python_script())
            .args(["timed", &steps.to_string(), &seconds.to_string()])
            .env("FAKE_NVML_SCRIPT", self.script())
            .env("VLLM_PROFILING_NVML_LIBRARY", fake_nvml_library())
            .env(
                "VLLM_PROFILING_AMDSMI_LIBRARY",
                self.dir.path().join("no-amd.so"),
            )
            .env("VLLM_PROFILING_SAMPLE_INTERVAL", INTERVAL.to_string());
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        run(&mut cmd, LIMIT)
    }
}

/// The n-th sample of a device plays frame n (the last frame repeats): compares every field.
fn assert_samples_follow_frames(
    samples: &[GpuSample],
    device_id: u32,
    total_mb: f64,
    frames: &[Value],
) {
    assert!(
        samples.len() >= 4,
        "only {} samples of device {device_id}",
        samples.len()
    );
    for (n, sample) in samples.iter().enumerate() {
        let frame = &frames[n.min(frames.len() - 1)];
        let expected = GpuSample {
            timestamp: sample.timestamp,
            ..expected_gpu_sample(device_id, total_mb, frame)
        };
        assert_eq!(sample, &expected, "device {device_id}, sample {n}");
    }
}

/// The warning lines the agent printed (every agent line starts with `vllm-profiler:`).
fn agent_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("vllm-profiler:"))
        .collect()
}

/// Lines naming the absent amd-smi library the tests point at (expected: one).
fn is_amd_absent_line(line: &str) -> bool {
    line.contains("amd-smi") && line.contains("no-amd.so")
}

#[test]
fn two_fake_devices_are_sampled_field_for_field_and_steps_carry_their_figures() {
    let script = two_device_script(8);
    let fake = Scripted::new(&script);
    let run = fake.run_python(12, 0.06, &[]);
    assert_success(&run);
    assert_eq!(run.stdout, "");
    let r = read_reports(&fake.out(), run.pid);

    let h = &r.history;
    assert_eq!(h.detector, "NVMLDetector");
    assert_eq!(h.devices.len(), 2);
    for (device, (name, uuid, total)) in h.devices.iter().zip([
        (
            "Fake GPU Zero",
            "GPU-00000000-1111-2222-3333-444444444444",
            81920.0,
        ),
        (
            "Fake GPU One",
            "GPU-11111111-1111-2222-3333-444444444444",
            40960.0,
        ),
    ]) {
        assert_eq!(device.name.as_deref(), Some(name));
        assert_eq!(device.uuid.as_deref(), Some(uuid));
        assert_eq!(device.gpu_type, "nvidia");
        assert_eq!(device.memory_total_mb, Some(total));
    }
    assert_eq!((h.devices[0].index, h.devices[1].index), (0, 1));

    let frames0 = script["devices"][0]["frames"].as_array().unwrap();
    let frames1 = script["devices"][1]["frames"].as_array().unwrap();
    let zero = device_samples(h, 0);
    let one = device_samples(h, 1);
    assert_eq!(
        zero.len(),
        one.len(),
        "one sampler tick samples both devices"
    );
    assert_samples_follow_frames(&zero, 0, 81920.0, frames0);
    assert_samples_follow_frames(&one, 1, 40960.0, frames1);
    assert_eq!(
        h.host_history.len(),
        zero.len(),
        "host and devices sampled on the same ticks"
    );

    // About the configured interval, on average: the sampler keeps a fixed cadence (a late
    // tick is followed by an early one), so single gaps vary on a loaded machine.
    let span = zero.last().unwrap().timestamp - zero[0].timestamp;
    let mean_gap = span / (zero.len() - 1) as f64;
    assert!(
        (INTERVAL * 0.5..=INTERVAL * 4.0).contains(&mean_gap),
        "mean gap {mean_gap} s over {} samples",
        zero.len()
    );
    // Timestamps are Unix seconds.
    let now = vllm_profiler_format::unix_now();
    assert!((now - zero[0].timestamp).abs() < 120.0);

    // Steps take utilization and this process's memory from device 1, where it holds memory.
    assert_eq!(r.summary.memory_source, MemorySource::GpuProcess);
    assert_eq!(r.summary.detector.as_deref(), Some("NVMLDetector"));
    let utilizations: Vec<f64> = one.iter().map(|s| s.gpu_utilization.unwrap()).collect();
    let own_memory: Vec<f64> = one
        .iter()
        .map(|s| s.process_memory_used_mb.unwrap())
        .collect();
    let mut with_metrics = 0;
    for step in &r.steps.detailed_steps {
        let (Some(start), Some(end)) = (
            step.gpu_metrics.start_utilization,
            step.gpu_metrics.end_utilization,
        ) else {
            continue; // began before the first sample
        };
        with_metrics += 1;
        assert!(
            utilizations.contains(&start),
            "{start} not among {utilizations:?}"
        );
        assert!(
            utilizations.contains(&end),
            "{end} not among {utilizations:?}"
        );
        assert!(end >= start, "frames only rise: {start} then {end}");
        let memory = step.memory_used_mb.unwrap();
        assert!(
            own_memory.contains(&memory),
            "{memory} not among {own_memory:?}"
        );
    }
    assert!(
        with_metrics >= 10,
        "{with_metrics} of 12 steps had GPU figures"
    );
    // Only the absent amd-smi was reported.
    let lines = agent_lines(&run.stderr);
    assert!(
        lines.iter().all(|l| is_amd_absent_line(l)),
        "{}",
        run.stderr
    );
}

#[test]
fn a_symbol_missing_from_the_library_nulls_that_metric_only_with_one_warning() {
    let mut script = two_device_script(3);
    script["omit_symbols"] = json!(["nvmlDeviceGetPowerUsage"]);
    let fake = Scripted::new(&script);
    let run = fake.run_python(6, 0.05, &[]);
    assert_success(&run);
    let h = read_reports(&fake.out(), run.pid).history;
    for device in [0, 1] {
        let frames = script["devices"][device]["frames"].as_array().unwrap();
        let total = [81920.0, 40960.0][device];
        let samples = device_samples(&h, device as u32);
        assert!(samples.len() >= 4);
        for (n, sample) in samples.iter().enumerate() {
            let expected = GpuSample {
                timestamp: sample.timestamp,
                power_draw: None,
                ..expected_gpu_sample(device as u32, total, &frames[n.min(frames.len() - 1)])
            };
            assert_eq!(sample, &expected, "device {device}, sample {n}");
        }
    }
    let lines = agent_lines(&run.stderr);
    let power: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("nvmlDeviceGetPowerUsage"))
        .collect();
    assert_eq!(power.len(), 1, "{}", run.stderr);
    assert!(power[0].contains("power_draw will be null"), "{}", power[0]);
}

#[test]
fn an_error_mid_run_nulls_that_sample_and_sampling_goes_on() {
    let mut script = two_device_script(6);
    script["devices"][0]["frames"][2]["errors"] =
        json!({"nvmlDeviceGetTemperature": 999, "nvmlDeviceGetMemoryInfo_v2": 10});
    let fake = Scripted::new(&script);
    let run = fake.run_python(10, 0.05, &[]);
    assert_success(&run);
    let h = read_reports(&fake.out(), run.pid).history;
    let frames = script["devices"][0]["frames"].as_array().unwrap();
    let samples = device_samples(&h, 0);
    assert!(samples.len() >= 5, "{} samples", samples.len());
    for (n, sample) in samples.iter().enumerate() {
        let mut expected = GpuSample {
            timestamp: sample.timestamp,
            ..expected_gpu_sample(0, 81920.0, &frames[n.min(frames.len() - 1)])
        };
        if n == 2 {
            expected.temperature = None;
            expected.memory_used_mb = None;
            expected.memory_total_mb = None;
            expected.memory_free_mb = None;
            expected.memory_utilization = None;
        }
        assert_eq!(sample, &expected, "sample {n}");
    }
    let lines = agent_lines(&run.stderr);
    let failures: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("sampling goes on"))
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "one line per failed metric: {}",
        run.stderr
    );
    assert!(failures
        .iter()
        .any(|l| l.contains("temperature") && l.contains("internal driver error")));
    assert!(failures
        .iter()
        .any(|l| l.contains("memory_used_mb") && l.contains("timeout was reached")));
}

#[test]
fn devices_env_limits_sampling_to_the_listed_indices() {
    let script = two_device_script(3);
    let fake = Scripted::new(&script);
    let run = fake.run_python(5, 0.05, &[("VLLM_PROFILING_DEVICES", "1,7")]);
    assert_success(&run);
    let h = read_reports(&fake.out(), run.pid).history;
    assert_eq!(h.devices.len(), 1);
    assert_eq!(h.devices[0].index, 1);
    assert!(!h.gpu_history.is_empty());
    assert!(h.gpu_history.iter().all(|s| s.device_id == 1));
    let unknown: Vec<_> = agent_lines(&run.stderr)
        .into_iter()
        .filter(|l| l.contains("device 7"))
        .collect();
    assert_eq!(unknown.len(), 1, "{}", run.stderr);
}

#[test]
fn with_no_gpu_library_the_cpu_detector_answers_and_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(python_script())
        .args(["timed", "4", "0.05"])
        .env(
            "VLLM_PROFILING_NVML_LIBRARY",
            dir.path().join("missing-nvml.so"),
        )
        .env(
            "VLLM_PROFILING_AMDSMI_LIBRARY",
            dir.path().join("missing-amd.so"),
        )
        .env("VLLM_PROFILING_SAMPLE_INTERVAL", "0.05");
    let run = run(&mut cmd, LIMIT);
    assert_success(&run);
    assert_eq!(run.stdout, "");
    let r = read_reports(&out, run.pid);
    assert_eq!(r.history.detector, "CPUDetector");
    assert!(r.history.devices.is_empty());
    assert!(r.history.gpu_history.is_empty());
    assert!(r.history.host_history.len() >= 2);
    assert_eq!(r.summary.total_steps, 4);
    assert_eq!(r.summary.memory_source, MemorySource::HostRss);
    assert_eq!(r.summary.detector.as_deref(), Some("CPUDetector"));
    // The user named both libraries: one line each says why they were not used.
    let lines = agent_lines(&run.stderr);
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(lines.iter().any(|l| l.contains("missing-nvml.so")));
    assert!(lines.iter().any(|l| l.contains("missing-amd.so")));
}

#[test]
fn with_default_library_names_and_no_driver_the_cpu_answers_silently() {
    if has_nvidia_driver() || which("nvidia-smi") {
        eprintln!("skipped: this machine has an NVIDIA driver, so NVML is expected to answer");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(python_script()).args(["timed", "2", "0.05"]);
    let run = run(&mut cmd, LIMIT);
    assert_success(&run);
    assert!(agent_lines(&run.stderr).is_empty(), "{}", run.stderr);
    assert_eq!(read_reports(&out, run.pid).history.detector, "CPUDetector");
}

/// The fake amd-smi's script: one device with the frames' figures, speaking the struct
/// layouts of amd-smi `version`.
fn amd_script(version: [u32; 3]) -> Value {
    json!({
        "lib_version": version,
        "devices": [
            {"name": "Fake Instinct MI300X", "uuid": "aaaaaaaa-0000-1111-2222-333333333333",
             "memory_total_mb": 196608,
             "frames": [frame(20, None), frame(21, None), frame(22, None)]},
        ]
    })
}

#[test]
fn the_fake_amd_smi_is_picked_ahead_of_nvml_with_every_known_struct_layout() {
    // ROCm 6.2 (24.6.2) and 6.3.3 (year 25, major 1): power as u32 (average only, as on
    // MI300); ROCm 6.4 (25.25.3): u64 socket_power first; 26.x: amdsmi_version_t without its
    // year, and u64 voltages.
    for version in [[24, 6, 2], [25, 1, 0], [25, 25, 3], [26, 5, 0]] {
        check_amd_sampling(version);
    }
}

fn check_amd_sampling(version: [u32; 3]) {
    let fake = Scripted::new(&two_device_script(3));
    let script = amd_script(version);
    std::fs::write(fake.dir.path().join("amd.json"), script.to_string()).unwrap();
    let run = fake.run_python(
        5,
        0.05,
        &[
            (
                "VLLM_PROFILING_AMDSMI_LIBRARY",
                fake_amdsmi_library().to_str().unwrap(),
            ),
            (
                "FAKE_AMDSMI_SCRIPT",
                fake.dir.path().join("amd.json").to_str().unwrap(),
            ),
        ],
    );
    assert_success(&run);
    assert!(
        agent_lines(&run.stderr).is_empty(),
        "{version:?}: {}",
        run.stderr
    );
    let r = read_reports(&fake.out(), run.pid);
    let h = &r.history;
    assert_eq!(h.detector, "AMDSMIDetector", "{version:?}");
    assert_eq!(h.devices.len(), 1);
    assert_eq!(h.devices[0].gpu_type, "amd");
    assert_eq!(h.devices[0].name.as_deref(), Some("Fake Instinct MI300X"));
    assert_eq!(
        h.devices[0].uuid.as_deref(),
        Some("aaaaaaaa-0000-1111-2222-333333333333")
    );
    let samples = device_samples(h, 0);
    assert!(samples.len() >= 4, "{version:?}");
    let frames = script["devices"][0]["frames"].as_array().unwrap();
    for (n, sample) in samples.iter().enumerate() {
        let f = &frames[n.min(frames.len() - 1)];
        let used = f["memory_used_mb"].as_f64().unwrap();
        let expected = GpuSample {
            timestamp: sample.timestamp,
            device_id: 0,
            gpu_utilization: f["gpu_utilization"].as_f64(),
            memory_controller_utilization: f["memory_controller_utilization"].as_f64(),
            memory_used_mb: Some(used),
            memory_total_mb: Some(196608.0),
            memory_free_mb: Some(196608.0 - used),
            memory_utilization: Some(used / 196608.0 * 100.0),
            temperature: f["temperature"].as_f64(),
            // amd-smi reports socket power in whole watts.
            power_draw: Some((f["power_draw_mw"].as_f64().unwrap() / 1000.0).floor()),
            ..GpuSample::default()
        };
        assert_eq!(sample, &expected, "{version:?} sample {n}");
    }
    assert_eq!(r.summary.memory_source, MemorySource::Gpu);
}

#[test]
fn an_amd_device_without_an_edge_sensor_reports_its_hotspot_temperature() {
    let fake = Scripted::new(&two_device_script(1));
    let mut script = amd_script([25, 25, 3]);
    for frame in script["devices"][0]["frames"].as_array_mut().unwrap() {
        let edge = frame
            .as_object_mut()
            .unwrap()
            .remove("temperature")
            .unwrap();
        frame["hotspot_temperature"] = json!(edge.as_u64().unwrap() + 20);
    }
    std::fs::write(fake.dir.path().join("amd.json"), script.to_string()).unwrap();
    let amd_script_path = fake.dir.path().join("amd.json");
    let run = fake.run_python(
        3,
        0.05,
        &[
            (
                "VLLM_PROFILING_AMDSMI_LIBRARY",
                fake_amdsmi_library().to_str().unwrap(),
            ),
            ("FAKE_AMDSMI_SCRIPT", amd_script_path.to_str().unwrap()),
        ],
    );
    assert_success(&run);
    assert!(agent_lines(&run.stderr).is_empty(), "{}", run.stderr);
    let samples = device_samples(&read_reports(&fake.out(), run.pid).history, 0);
    assert!(!samples.is_empty());
    let frames = script["devices"][0]["frames"].as_array().unwrap();
    for (n, sample) in samples.iter().enumerate() {
        let f = &frames[n.min(frames.len() - 1)];
        assert_eq!(
            sample.temperature,
            f["hotspot_temperature"].as_f64(),
            "sample {n}"
        );
    }
}

fn gpus_command(fake: &Scripted) -> Command {
    let mut cmd = clean_command(cli_binary());
    cmd.arg("gpus")
        .env("FAKE_NVML_SCRIPT", fake.script())
        .env("VLLM_PROFILING_NVML_LIBRARY", fake_nvml_library())
        .env(
            "VLLM_PROFILING_AMDSMI_LIBRARY",
            fake.dir.path().join("no-amd.so"),
        );
    cmd
}

#[test]
fn cli_gpus_lists_the_scripted_devices_exactly() {
    let fake = Scripted::new(&two_device_script(2));
    // The AMD library is named but absent: the CLI must say so and fail, not list NVML.
    let refused = run(&mut gpus_command(&fake), LIMIT);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("no-amd.so"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);
    assert_eq!(refused.stdout, "");

    let mut cmd = gpus_command(&fake);
    cmd.env_remove("VLLM_PROFILING_AMDSMI_LIBRARY")
        .arg("--json");
    let listed = run(&mut cmd, LIMIT);
    assert_success(&listed);
    let list: Value = serde_json::from_str(&listed.stdout).expect("gpus --json prints JSON");
    // Frame 0 of each device: used 1000 + 10 * base MiB, utilization base.
    assert_eq!(
        list,
        json!({
            "gpus": [
                {"index": 0, "name": "Fake GPU Zero", "gpu_type": "nvidia",
                 "total_memory_mb": 81920, "used_memory_mb": 1100, "free_memory_mb": 80820,
                 "utilization_percent": 10.0},
                {"index": 1, "name": "Fake GPU One", "gpu_type": "nvidia",
                 "total_memory_mb": 40960, "used_memory_mb": 1600, "free_memory_mb": 39360,
                 "utilization_percent": 60.0},
            ],
            "total": 2,
            "detector": "NVMLDetector",
        })
    );
}

#[test]
fn cli_gpus_reports_an_unusable_library_as_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("libnvidia-ml.so.1");
    std::fs::write(&not_a_library, "not an ELF file").unwrap();
    let mut cmd = clean_command(cli_binary());
    cmd.args(["gpus", "--nvml-library"]).arg(&not_a_library);
    let failed = run(&mut cmd, LIMIT);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert_eq!(failed.stdout, "");
    assert!(failed
        .stderr
        .starts_with("vllm-profiler: error: cannot use the NVML library"));
    assert!(
        failed.stderr.contains(not_a_library.to_str().unwrap()),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
}

#[test]
fn cli_gpus_prints_a_table_by_default_and_the_host_apart_when_there_is_no_gpu() {
    let fake = Scripted::new(&two_device_script(2));
    let mut cmd = gpus_command(&fake);
    cmd.env_remove("VLLM_PROFILING_AMDSMI_LIBRARY");
    let shown = run(&mut cmd, LIMIT);
    assert_success(&shown);
    let lines: Vec<&str> = shown.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", shown.stdout);
    assert!(lines[0].ends_with("detector: NVMLDetector"), "{}", lines[0]);
    let header: Vec<&str> = lines[1]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "IDX",
            "NAME",
            "TYPE",
            "UTIL %",
            "MEM CTRL %",
            "MEMORY USED/TOTAL",
            "TEMP °C",
            "POWER W",
            "SM MHz"
        ],
        "{}",
        lines[1]
    );
    // Frame 0: used 1000 + 10 * base MiB, utilization base (10 and 60).
    for (line, name, util, memory) in [
        (lines[2], "Fake GPU Zero", "10", "1100/81920 MiB"),
        (lines[3], "Fake GPU One", "60", "1600/40960 MiB"),
    ] {
        assert!(line.contains(name) && line.contains(memory), "{line}");
        assert!(line.split_whitespace().any(|c| c == util), "{line}");
    }

    // A driver with no device: no GPU row, the host under its own heading.
    let none = Scripted::new(&json!({"devices": []}));
    let mut cmd = gpus_command(&none);
    cmd.env_remove("VLLM_PROFILING_AMDSMI_LIBRARY");
    let shown = run(&mut cmd, LIMIT);
    assert_success(&shown);
    let lines: Vec<&str> = shown.stdout.lines().collect();
    assert_eq!(
        lines[1..4],
        ["no GPU found", "", "host"],
        "{}",
        shown.stdout
    );
    assert!(lines[4].contains("CPU %") && lines[4].contains("MEMORY USED/TOTAL"));
    assert_eq!(lines.len(), 6, "{}", shown.stdout);
    assert!(
        !shown.stdout.contains("cpu "),
        "the host is not a GPU row: {}",
        shown.stdout
    );
    // The JSON keeps the contract's CPU entry.
    cmd.arg("--json");
    let listed = run(&mut cmd, LIMIT);
    assert_success(&listed);
    let list: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(list["detector"], "CPUDetector");
    assert_eq!(list["gpus"][0]["gpu_type"], "cpu");
    // --json is one list, not a refreshing one.
    cmd.args(["--watch", "1"]);
    let refused = run(&mut cmd, LIMIT);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("'--json' cannot be used with '--watch"),
        "{}",
        refused.stderr
    );
}

#[test]
fn cli_gpus_watch_prints_refreshing_tables() {
    let fake = Scripted::new(&two_device_script(3));
    let mut cmd = gpus_command(&fake);
    cmd.env_remove("VLLM_PROFILING_AMDSMI_LIBRARY")
        .args(["--watch", "0.05", "--count", "3"]);
    let watched = run(&mut cmd, LIMIT);
    assert_success(&watched);
    let tables: Vec<&str> = watched
        .stdout
        .split("detector: NVMLDetector")
        .skip(1)
        .collect();
    assert_eq!(tables.len(), 3, "{}", watched.stdout);
    // Each refresh is a new sample: frame n's utilization of device 0 is 10 + n.
    for (n, table) in tables.iter().enumerate() {
        let row = table
            .lines()
            .find(|l| l.contains("Fake GPU Zero"))
            .expect("device 0 row");
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert!(columns.contains(&(10 + n).to_string().as_str()), "{row}");
    }
}

#[test]
fn pynvml_reads_the_fake_nvml_like_a_real_one() {
    let script = two_device_script(2);
    let fake = Scripted::new(&script);
    // pynvml loads "libnvidia-ml.so.1" by name: put the fake on the library path under it.
    let lib_dir = fake.dir.path().join("lib");
    std::fs::create_dir(&lib_dir).unwrap();
    std::os::unix::fs::symlink(fake_nvml_library(), lib_dir.join("libnvidia-ml.so.1")).unwrap();
    let mut cmd = clean_command("python3");
    cmd.arg(workspace_root().join("tests/data/pynvml_read.py"))
        .env("FAKE_NVML_SCRIPT", fake.script())
        .env("LD_LIBRARY_PATH", &lib_dir);
    let read = run(&mut cmd, LIMIT);
    assert_success(&read);
    let seen: Value = serde_json::from_str(&read.stdout).expect("pynvml_read prints JSON");
    let pid = u64::from(read.pid);
    let mut expected = Vec::new();
    for (device, total) in [(0usize, 81920u64), (1, 40960)] {
        let d = &script["devices"][device];
        let f = &d["frames"][0];
        let used = f["memory_used_mb"].as_u64().unwrap();
        let processes: Vec<Value> = f["processes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let pid = if p["pid"] == "self" {
                            pid
                        } else {
                            p["pid"].as_u64().unwrap()
                        };
                        json!([pid, p["used_memory_mb"].as_u64().unwrap() << 20])
                    })
                    .collect()
            })
            .unwrap_or_default();
        expected.push(json!({
            "name": d["name"], "uuid": d["uuid"],
            "memory": [total << 20, used << 20, (total - used) << 20],
            "memory_v2": [total << 20, used << 20, (total - used) << 20],
            "utilization": [f["gpu_utilization"], f["memory_controller_utilization"]],
            "temperature": f["temperature"],
            "power_mw": f["power_draw_mw"],
            "power_limit_mw": f["power_limit_mw"],
            "clocks": [f["sm_clock_mhz"], f["memory_clock_mhz"]],
            "processes": processes,
        }));
    }
    assert_eq!(
        seen,
        json!({"driver_version": "550.54.15", "count": 2, "devices": expected})
    );
}

/// Runs only where an NVIDIA driver is installed: the agent and the CLI against the real
/// NVML, compared with `nvidia-smi`.
#[test]
fn real_gpu_matches_nvidia_smi() {
    let driver_answers = which("nvidia-smi")
        && Command::new("nvidia-smi")
            .arg("-L")
            .output()
            .is_ok_and(|o| o.status.success());
    if !driver_answers {
        eprintln!(
            "skipped: no working nvidia-smi (no NVIDIA driver), so no real GPU to compare with"
        );
        return;
    }
    let smi = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,uuid,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .expect("nvidia-smi runs");
    assert!(smi.status.success());
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&smi.stdout)
        .lines()
        .map(|l| l.split(',').map(|c| c.trim().to_owned()).collect())
        .collect();
    let mut cmd = clean_command(cli_binary());
    cmd.args(["gpus", "--json"]);
    let listed = run(&mut cmd, LIMIT);
    assert_success(&listed);
    let list: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(list["detector"], "NVMLDetector");
    assert_eq!(list["total"].as_u64().unwrap() as usize, rows.len());
    for (gpu, row) in list["gpus"].as_array().unwrap().iter().zip(&rows) {
        assert_eq!(gpu["index"].as_u64().unwrap().to_string(), row[0]);
        assert_eq!(gpu["name"], row[1].as_str());
        assert_eq!(gpu["total_memory_mb"].as_u64().unwrap().to_string(), row[3]);
        assert!(gpu["utilization_percent"].as_f64().is_some());
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(python_script()).args(["timed", "5", "0.05"]);
    let profiled = run(&mut cmd, LIMIT);
    assert_success(&profiled);
    let h = read_reports(&out, profiled.pid).history;
    assert_eq!(h.detector, "NVMLDetector");
    let uuids: BTreeMap<u32, String> = h
        .devices
        .iter()
        .map(|d| (d.index, d.uuid.clone().unwrap()))
        .collect();
    for row in &rows {
        assert_eq!(uuids[&row[0].parse::<u32>().unwrap()], row[2]);
    }
    for sample in &h.gpu_history {
        assert!(sample
            .gpu_utilization
            .is_some_and(|u| (0.0..=100.0).contains(&u)));
        assert!(sample.memory_total_mb.is_some_and(|m| m > 0.0));
        assert!(sample.temperature.is_some_and(|t| t > 0.0 && t < 120.0));
    }
}

#[test]
fn a_process_absent_from_the_process_list_gets_the_devices_memory_not_zero() {
    // As in a container with its own pid namespace, or an engine process holding no GPU
    // memory: NVML lists only another pid.
    let mut script = two_device_script(1);
    script["devices"][1]["frames"][0]["processes"] = json!([{"pid": 1, "used_memory_mb": 7}]);
    let fake = Scripted::new(&script);
    let profiled = fake.run_python(4, 0.05, &[("VLLM_PROFILING_DEVICES", "1")]);
    assert_success(&profiled);
    let r = read_reports(&fake.out(), profiled.pid);
    assert_eq!(r.summary.memory_source, MemorySource::Gpu);
    let used = script["devices"][1]["frames"][0]["memory_used_mb"].as_f64();
    assert_eq!(r.summary.max_memory_mb, used);
    let samples = device_samples(&r.history, 1);
    assert!(samples
        .iter()
        .all(|s| s.process_memory_used_mb == Some(0.0)));

    // `VLLM_PROFILING_DEVICES=all` means every device, for the CLI as for the agent.
    let mut cmd = gpus_command(&fake);
    cmd.env_remove("VLLM_PROFILING_AMDSMI_LIBRARY")
        .env("VLLM_PROFILING_DEVICES", "all")
        .arg("--json");
    let listed = run(&mut cmd, LIMIT);
    assert_success(&listed);
    let list: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(list["total"], 2);
}
