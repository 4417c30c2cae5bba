//! Faults end to end, with the agent preloaded into a real `python3`: an output dir that cannot
//! be written (read-only, a file, under a file, a full disk), symlinks planted where the agent
//! writes, and a fake NVML that fails, loses its device or blocks. The host keeps its exit
//! status and stdout, nothing hangs (every process is bounded), the agent says what went wrong
//! once, and it never writes through a planted link.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use vllm_profiler_format as format;
use vllm_profiler_format::GpuSample;
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(60);
const STEPS: u32 = 3;

fn host_script() -> PathBuf {
    workspace_root().join("tests/data/host.py")
}

/// `host.py steps STEPS` without the agent: what every profiled run must print and return.
fn reference() -> (Option<i32>, String) {
    let mut cmd = clean_command("python3");
    cmd.arg(host_script()).args(["steps", &STEPS.to_string()]);
    let plain = run(&mut cmd, LIMIT);
    assert_eq!(plain.status.code(), Some(5), "{}", plain.stderr);
    (plain.status.code(), plain.stdout)
}

/// The host's exit status and stdout are what they are without the agent.
fn assert_host_unchanged(child: &Finished) {
    let (code, stdout) = reference();
    assert_eq!(child.status.code(), code, "stderr:\n{}", child.stderr);
    assert_eq!(child.stdout, stdout, "stderr:\n{}", child.stderr);
}

/// Lines the agent printed (each starts with its prefix).
fn agent_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("vllm-profiler: "))
        .collect()
}

/// The effective uid, from /proc (root ignores file modes).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Whether this machine lets the test make a user and mount namespace (to mount a tmpfs).
fn namespaces_work() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`unshare -rm` + mount tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Err(format!("cannot run unshare: {err}")),
    }
}

/// Runs the host profiled into `out` with `env`, from `cwd`.
fn run_host(out: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = profiled_command("python3", out);
    cmd.current_dir(cwd).arg(host_script()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, LIMIT)
}

/// A dir whose entries (recursively, by relative path) are checked before and after a run.
fn tree(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            names.push(path.strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    names.sort();
    names
}

/// One agent line, the first failure's (the crash-safe journal tries the dir first), naming
/// `dir` and why; nothing else written anywhere.
fn check_unwritable(child: &Finished, dir: &Path, why: &str) {
    assert_host_unchanged(child);
    let lines = agent_lines(&child.stderr);
    assert_eq!(lines.len(), 1, "{}", child.stderr);
    assert!(
        (lines[0].contains("the crash-safe journal could not be written")
            || lines[0].contains("final export failed"))
            && lines[0].contains(&dir.display().to_string())
            && lines[0].contains(why)
            && lines[0].contains("later failures to write into"),
        "{}",
        lines[0]
    );
}

#[test]
fn an_output_dir_that_is_a_file_is_one_line_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"mine").unwrap();
    let child = run_host(&file, &cwd, &["steps", &STEPS.to_string()], &[]);
    check_unwritable(&child, &file, "is not a directory");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    assert_eq!(tree(tmp.path()), ["a-file", "cwd"]);
}

#[test]
fn an_output_dir_under_a_file_is_one_line_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"mine").unwrap();
    let dir = file.join("reports");
    let child = run_host(&dir, &cwd, &["steps", &STEPS.to_string()], &[]);
    check_unwritable(&child, &dir, "Not a directory");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    assert_eq!(tree(tmp.path()), ["a-file", "cwd"]);
}

#[test]
fn periodic_and_final_exports_into_a_file_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"mine").unwrap();
    // About ten periodic exports fail while the host runs.
    let child = run_host(
        &file,
        &cwd,
        &["steps", "10", "0.05"],
        &[("VLLM_PROFILING_EXPORT_INTERVAL", "0.05")],
    );
    assert_eq!(child.status.code(), Some(5), "{}", child.stderr);
    assert_eq!(child.stdout, "host done 10\n");
    let lines = agent_lines(&child.stderr);
    let path = file.display().to_string();
    assert_eq!(lines.len(), 1, "{}", child.stderr);
    assert!(lines[0].contains(&path) && lines[0].contains("is not a directory"));
    assert_eq!(tree(tmp.path()), ["a-file", "cwd"]);
}

#[test]
fn an_unwritable_output_dir_is_one_line_and_nothing_is_written() {
    if effective_uid() == 0 {
        // Root ignores modes: a read-only mount is what root cannot write (below).
        eprintln!(
            "skipped: running as root, which ignores a 0555 mode; see the read-only mount test"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let dir = tmp.path().join("reports");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let child = run_host(&dir, &cwd, &["steps", &STEPS.to_string()], &[]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    check_unwritable(&child, &dir, "Permission denied");
    assert_eq!(tree(tmp.path()), ["cwd", "reports"]);
}

/// Runs the host in a user and mount namespace, with a 64 kB tmpfs mounted at `mount`, after
/// `prepare` (shell commands) ran there; prints `LEFT <entries of the tmpfs>` on stderr after.
/// `None` (with the reason printed) where namespaces cannot be made.
fn run_in_tmpfs(mount: &Path, out: &Path, prepare: &str) -> Option<Finished> {
    if let Err(reason) = namespaces_work() {
        missing_tool(&format!(
            "{reason} (user and mount namespaces: util-linux's unshare)"
        ));
        return None;
    }
    let script = format!(
        "set -e; mount -t tmpfs -o size=64k tmpfs \"$MOUNT\"; {prepare}; set +e; \
         env LD_PRELOAD=\"$AGENT\" \"$@\"; rc=$?; \
         echo LEFT $(cd \"$MOUNT\" && find . | sort) >&2; exit $rc"
    );
    let mut cmd = clean_command("unshare");
    cmd.args(["-rm", "sh", "-c", &script, "sh", "python3"])
        .arg(host_script())
        .args(["steps", &STEPS.to_string()])
        .env("MOUNT", mount)
        .env("AGENT", agent_library())
        .env("VLLM_ENABLE_PROFILING", "1")
        .env("VLLM_PROFILING_OUTPUT_DIR", out);
    Some(run(&mut cmd, LIMIT))
}

fn left_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("LEFT "))
        .unwrap_or_else(|| panic!("no LEFT line: {stderr}"))
}

#[test]
fn a_read_only_output_dir_is_one_line_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let out = mount.join("reports");
    let Some(child) = run_in_tmpfs(
        &mount,
        &out,
        "mkdir \"$MOUNT/reports\"; mount -o remount,ro \"$MOUNT\"",
    ) else {
        return;
    };
    check_unwritable(&child, &out, "Read-only file system");
    assert_eq!(left_line(&child.stderr), "LEFT . ./reports");
    assert_eq!(tree(tmp.path()), ["mnt"]);
}

#[test]
fn a_full_disk_is_one_line_and_leaves_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let out = mount.join("reports");
    let Some(child) = run_in_tmpfs(
        &mount,
        &out,
        "mkdir \"$MOUNT/reports\"; dd if=/dev/zero of=\"$MOUNT/fill\" bs=4k 2>/dev/null || true",
    ) else {
        return;
    };
    check_unwritable(&child, &out, "No space left on device");
    assert_eq!(left_line(&child.stderr), "LEFT . ./fill ./reports");
    assert_eq!(tree(tmp.path()), ["mnt"]);
}

/// `name_of(pid)` with the pid left to the shell (`$$`, the pid `exec` keeps).
fn shell_name(name_of: fn(u32) -> String) -> String {
    name_of(u32::MAX).replace(&u32::MAX.to_string(), "$$")
}

#[test]
fn symlinks_planted_at_report_and_temporary_paths_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reports");
    std::fs::create_dir(&out).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let names = [
        shell_name(format::summary_file_name),
        shell_name(format::detailed_steps_file_name),
        shell_name(format::gpu_history_file_name),
        shell_name(format::trace_file_name),
    ];
    // A link at each final path and at the first 20 temporary paths of each report.
    let mut plant = String::from("set -e; cd \"$OUT\"; ");
    for name in &names {
        plant += &format!("ln -s \"$VICTIM\" {name}; ");
        plant += &format!("for n in $(seq 0 19); do ln -s \"$VICTIM\" .{name}.$$.$n.tmp; done; ");
    }
    plant += "cd \"$CWD\"; exec env LD_PRELOAD=\"$AGENT\" \"$@\"";
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut cmd = clean_command("sh");
    cmd.args(["-c", &plant, "sh", "python3"])
        .arg(host_script())
        .args(["steps", &STEPS.to_string()])
        .env("OUT", &out)
        .env("CWD", &cwd)
        .env("VICTIM", &victim)
        .env("AGENT", agent_library())
        .env("VLLM_ENABLE_PROFILING", "1")
        .env("VLLM_PROFILING_OUTPUT_DIR", &out);
    let child = run(&mut cmd, LIMIT);
    assert_host_unchanged(&child);
    assert_eq!(agent_lines(&child.stderr), Vec::<&str>::new());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "the victim's mode changed");
    // The reports replaced the links at their paths: regular files, with the host's steps.
    let reports = [
        format::summary_file_name(child.pid),
        format::detailed_steps_file_name(child.pid),
        format::gpu_history_file_name(child.pid),
        format::trace_file_name(child.pid),
    ];
    for name in &reports {
        let meta = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is not a regular file");
    }
    let r = read_reports(&out, child.pid);
    assert_eq!(r.summary.total_steps, u64::from(STEPS));
    assert_eq!(r.steps.detailed_steps.len(), STEPS as usize);
    // Every planted temporary link is still there, untouched; nothing else was added.
    let entries = file_names(&out);
    assert_eq!(entries.len(), 4 + 4 * 20, "{entries:?}");
    for entry in entries.iter().filter(|e| e.starts_with('.')) {
        let target = std::fs::read_link(out.join(entry)).unwrap();
        assert_eq!(target, victim, "{entry}");
    }
}

// ---- The fake NVML misbehaving ----

const INTERVAL: &str = "0.05";
const TOTAL_MB: f64 = 81920.0;

/// Every function that reads a metric of a device.
const METRIC_FUNCTIONS: &[&str] = &[
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses_v3",
];

/// The report fields of each metric, as the agent's warnings name them.
const METRIC_FIELDS: &[&str] = &[
    "gpu_utilization and memory_controller_utilization",
    "memory_used_mb, memory_total_mb and memory_utilization",
    "temperature",
    "power_draw",
    "power_limit",
    "sm_clock_mhz",
    "memory_clock_mhz",
    "process_memory_used_mb",
];

fn frame(base: u32) -> Value {
    json!({
        "gpu_utilization": base,
        "memory_controller_utilization": base / 2,
        "memory_used_mb": 1000 + u64::from(base) * 10,
        "temperature": 30 + base / 4,
        "power_draw_mw": 50_000 + base * 1250,
        "power_limit_mw": 300_000 + base,
        "sm_clock_mhz": 1000 + base,
        "memory_clock_mhz": 2000 + base,
        "processes": [{"pid": "self", "used_memory_mb": 100 + base}],
    })
}

/// A sample with every figure null.
fn null_sample() -> GpuSample {
    GpuSample {
        timestamp: 0.0,
        device_id: 0,
        gpu_utilization: None,
        memory_utilization: None,
        temperature: None,
        power_draw: None,
        memory_used_mb: None,
        memory_total_mb: None,
        memory_free_mb: None,
        memory_controller_utilization: None,
        power_limit: None,
        sm_clock_mhz: None,
        memory_clock_mhz: None,
        process_memory_used_mb: None,
        ..GpuSample::default()
    }
}

fn errors_of_every_function(code: u32) -> Value {
    Value::Object(
        METRIC_FUNCTIONS
            .iter()
            .map(|f| (f.to_string(), json!(code)))
            .collect(),
    )
}

/// A tempdir with a one-device script (`frames`), its output dir and runtime dir.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new(frames: Vec<Value>) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let script = json!({"devices": [{
            "name": "Fake GPU", "uuid": "GPU-00000000-1111-2222-3333-444444444444",
            "memory_total_mb": TOTAL_MB as u64, "frames": frames}]});
        std::fs::write(dir.path().join("nvml.json"), script.to_string()).unwrap();
        Fake { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn run(&self, args: &[&str]) -> Finished {
        let mut cmd = profiled_command("python3", &self.out());
        cmd.arg(host_script())
            .args(args)
            .env("FAKE_NVML_SCRIPT", self.dir.path().join("nvml.json"))
            .env("VLLM_PROFILING_NVML_LIBRARY", fake_nvml_library())
            .env(
                "VLLM_PROFILING_AMDSMI_LIBRARY",
                self.dir.path().join("no-amd.so"),
            )
            .env("VLLM_PROFILING_RUNTIME_DIR", self.dir.path().join("run"))
            .env("VLLM_PROFILING_SAMPLE_INTERVAL", INTERVAL);
        run(&mut cmd, LIMIT)
    }
}

/// The samples of device 0, oldest first.
fn samples(out: &Path, pid: u32) -> Vec<GpuSample> {
    let mut samples = read_reports(out, pid).history.gpu_history;
    assert!(samples.iter().all(|s| s.device_id == 0));
    samples.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    samples
}

/// Agent lines other than the one about the absent amd-smi library the tests point at.
fn nvml_lines(stderr: &str) -> Vec<&str> {
    agent_lines(stderr)
        .into_iter()
        .filter(|l| !(l.contains("amd-smi") && l.contains("no-amd.so")))
        .collect()
}

/// Checks the steps of a `steps N` run: exactly N, batch sizes 1..=N.
fn assert_steps_exact(out: &Path, pid: u32, n: u32) {
    let r = read_reports(out, pid);
    assert_eq!(r.summary.total_steps, u64::from(n));
    let batches: Vec<u32> = r
        .steps
        .detailed_steps
        .iter()
        .map(|s| s.batch_size)
        .collect();
    assert_eq!(batches, (1..=n).collect::<Vec<_>>());
}

#[test]
fn every_metric_failing_for_three_samples_nulls_them_then_sampling_recovers() {
    let mut frames: Vec<Value> = (0..8).map(|i| frame(10 + i)).collect();
    for f in &mut frames[2..=4] {
        f["errors"] = errors_of_every_function(999);
    }
    let fake = Fake::new(frames.clone());
    let child = fake.run(&["steps", "12", "0.05"]);
    assert_eq!(child.status.code(), Some(5), "{}", child.stderr);
    assert_eq!(child.stdout, "host done 12\n");
    assert_steps_exact(&fake.out(), child.pid, 12);
    let samples = samples(&fake.out(), child.pid);
    assert!(samples.len() >= 7, "{} samples", samples.len());
    for (n, sample) in samples.iter().enumerate() {
        let expected = if (2..=4).contains(&n) {
            null_sample()
        } else {
            expected_gpu_sample(0, TOTAL_MB, &frames[n.min(frames.len() - 1)])
        };
        let expected = GpuSample {
            timestamp: sample.timestamp,
            ..expected
        };
        assert_eq!(sample, &expected, "sample {n}");
    }
    // One line per metric that failed, however many samples it failed in.
    let lines = nvml_lines(&child.stderr);
    assert!(
        lines.iter().all(|l| l.contains("sampling goes on")),
        "{lines:?}"
    );
    for fields in METRIC_FIELDS {
        let about: Vec<_> = lines
            .iter()
            .filter(|l| l.contains(&format!("read {fields} of device 0")))
            .collect();
        assert_eq!(about.len(), 1, "{fields}: {lines:?}");
    }
    assert_eq!(lines.len(), METRIC_FIELDS.len(), "{lines:?}");
}

#[test]
fn a_device_lost_mid_run_is_said_once_gives_null_samples_and_comes_back() {
    // Frames 0-2 answer, 3-5 lose the device (GPU_IS_LOST from every function), 6 on answer.
    let mut frames: Vec<Value> = (0..3).map(|i| frame(20 + i)).collect();
    for _ in 3..6 {
        let mut lost = frame(0);
        lost["errors"] = errors_of_every_function(15);
        frames.push(lost);
    }
    frames.push(frame(40));
    let fake = Fake::new(frames.clone());
    let child = fake.run(&["steps", "16", "0.05"]);
    assert_eq!(child.status.code(), Some(5), "{}", child.stderr);
    assert_eq!(child.stdout, "host done 16\n");
    assert_steps_exact(&fake.out(), child.pid, 16);
    let samples = samples(&fake.out(), child.pid);
    assert!(samples.len() >= 8, "{} samples", samples.len());
    for (n, sample) in samples.iter().enumerate() {
        // A lost device is asked only for utilization (which advances the fake's frames),
        // so the n-th sample still plays frame n.
        let expected = match n {
            3..=5 => null_sample(),
            _ => expected_gpu_sample(0, TOTAL_MB, &frames[n.min(frames.len() - 1)]),
        };
        let expected = GpuSample {
            timestamp: sample.timestamp,
            ..expected
        };
        assert_eq!(sample, &expected, "sample {n}");
    }
    // One line when the device is lost, one when it is back; none per metric.
    let lines = nvml_lines(&child.stderr);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("lost device 0") && lines[0].contains("fell off the bus"),
        "{lines:?}"
    );
    assert!(lines[1].contains("device 0 again"), "{lines:?}");
}

#[test]
fn a_call_blocking_two_seconds_never_delays_the_recorder_and_sampling_resumes() {
    let mut frames: Vec<Value> = (0..4).map(|i| frame(30 + i)).collect();
    frames[2]["delay_ms"] = json!({"nvmlDeviceGetUtilizationRates": 2000});
    let fake = Fake::new(frames.clone());
    let child = fake.run(&["tight", "3.5"]);
    assert_eq!(child.status.code(), Some(5), "{}", child.stderr);
    assert_eq!(child.stdout, "host done\n");
    let recorded: u64 = child
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("recorded "))
        .unwrap_or_else(|| panic!("{}", child.stderr))
        .parse()
        .unwrap();
    let r = read_reports(&fake.out(), child.pid);
    assert_eq!(r.summary.total_steps, recorded);
    let starts: Vec<f64> = r
        .steps
        .detailed_steps
        .iter()
        .map(|s| s.start_time)
        .collect();
    assert_eq!(starts.len() as u64, recorded.min(10_000));
    let samples = samples(&fake.out(), child.pid);
    // The blocked call: the third sample took 2 s to read.
    let blocked = samples
        .windows(2)
        .position(|w| w[1].timestamp - w[0].timestamp > 1.5)
        .unwrap_or_else(|| panic!("no 2 s gap in the samples: {samples:?}"));
    let blocked_at = samples[blocked].timestamp;
    let resumed: Vec<_> = samples
        .iter()
        .filter(|s| s.timestamp > blocked_at + 1.9)
        .collect();
    assert!(
        resumed.len() >= 3,
        "{} samples after the block",
        resumed.len()
    );
    assert_eq!(
        *resumed.last().unwrap(),
        &GpuSample {
            timestamp: resumed.last().unwrap().timestamp,
            ..expected_gpu_sample(0, TOTAL_MB, &frames[3])
        }
    );
    // Steps were recorded all through the block, with no gap anywhere near 2 s.
    let during = starts
        .iter()
        .filter(|&&t| t > blocked_at + 0.1 && t < blocked_at + 1.9)
        .count();
    assert!(during > 0, "no step recorded while the sampler was blocked");
    let max_gap = starts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(max_gap < 0.5, "a {max_gap:.3} s gap between steps");
}
