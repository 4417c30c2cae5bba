//! The environment end to end: every variable the agent reads, given every kind of bad value,
//! in a real `python3` with the agent preloaded. The host keeps its exit status and stdout, the
//! agent says at most one short line per variable on stderr and uses the default (or, where the
//! value is valid, does what the README says it means). And no value of any `VLLM_*` variable
//! ends up in a report.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use vllm_profiler_format as format;
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(30);
/// Steps the host records (batch sizes 1..=STEPS).
const STEPS: u32 = 4;
/// Processes run at once.
const PARALLEL: usize = 4;
/// An agent line longer than this is not "one clear line".
const LONGEST_LINE: usize = 400;

fn host_script() -> PathBuf {
    workspace_root().join("tests/data/host.py")
}

/// What a variable is, for what its values mean.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `VLLM_ENABLE_PROFILING`: off unless a true boolean.
    Master,
    /// `VLLM_ENABLE_GPU_MONITORING`: on by default; off means no GPU history file.
    GpuMonitoring,
    /// A boolean with no effect a ctypes host can see (layer hooks live in Python).
    Bool,
    OutputDir,
    /// A number in a range that none of the tried values but the valid ones falls in.
    Number,
    /// A library path: any non-empty path is taken; one that does not load is one line.
    Library,
    Devices,
    PrometheusAddr,
    Processes,
    /// Where the shared sampler's locks live: any non-empty path is taken.
    RuntimeDir,
}

/// Every variable the agent reads (crates/agent/src/config.rs). Adding one is one line.
const VARS: &[(&str, Kind)] = &[
    ("VLLM_ENABLE_PROFILING", Kind::Master),
    ("VLLM_ENABLE_GPU_MONITORING", Kind::GpuMonitoring),
    ("VLLM_ENABLE_LAYER_PROFILING", Kind::Bool),
    ("VLLM_PROFILING_OUTPUT_DIR", Kind::OutputDir),
    ("VLLM_PROFILING_SAMPLE_INTERVAL", Kind::Number),
    ("VLLM_PROFILING_EXPORT_INTERVAL", Kind::Number),
    ("VLLM_PROFILING_MAX_HISTORY", Kind::Number),
    ("VLLM_PROFILING_NVML_LIBRARY", Kind::Library),
    ("VLLM_PROFILING_AMDSMI_LIBRARY", Kind::Library),
    ("VLLM_PROFILING_DEVICES", Kind::Devices),
    ("VLLM_PROFILING_PROMETHEUS_ADDR", Kind::PrometheusAddr),
    ("VLLM_PROFILING_PROCESSES", Kind::Processes),
    ("VLLM_PROFILING_SHARED_SAMPLER", Kind::Bool),
    ("VLLM_PROFILING_RUNTIME_DIR", Kind::RuntimeDir),
];

/// The values every variable is tried with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bad {
    Empty,
    NaN,
    MinusOne,
    Zero,
    HugeFloat,
    HugeInteger,
    Long,
    NonUtf8,
}

const BAD: &[Bad] = &[
    Bad::Empty,
    Bad::NaN,
    Bad::MinusOne,
    Bad::Zero,
    Bad::HugeFloat,
    Bad::HugeInteger,
    Bad::Long,
    Bad::NonUtf8,
];

impl Bad {
    fn value(self) -> OsString {
        match self {
            Bad::Empty => "".into(),
            Bad::NaN => "NaN".into(),
            Bad::MinusOne => "-1".into(),
            Bad::Zero => "0".into(),
            Bad::HugeFloat => "1e308".into(),
            Bad::HugeInteger => "99999999999999999999".into(),
            Bad::Long => "x".repeat(100_000).into(),
            Bad::NonUtf8 => OsString::from_vec(b"\xff\xfe-not-utf8".to_vec()),
        }
    }
}

/// Where the reports must be, relative to a case's own directory.
#[derive(Debug, PartialEq)]
enum Reports {
    /// None at all: the agent is off.
    Nowhere,
    /// The three reports in the dir the test gave.
    Given,
    /// The summary and steps only, in the dir the test gave: no GPU sampler ran.
    GivenWithoutGpu,
    /// In `./profiling_results` of the host's working directory: the default.
    Default,
    /// In this dir (the value itself), relative to the working directory.
    Relative(OsString),
}

/// How many agent lines the case allows on stderr.
#[derive(Debug, PartialEq)]
enum Lines {
    None,
    /// Exactly one, containing this text.
    One(String),
}

fn expected(var: &str, kind: Kind, bad: Bad) -> (Lines, Reports) {
    let warned = || Lines::One(var.to_owned());
    match (kind, bad) {
        (Kind::Master, Bad::Empty | Bad::Zero) => (Lines::None, Reports::Nowhere),
        (Kind::Master, _) => (warned(), Reports::Nowhere),
        (Kind::GpuMonitoring, Bad::Zero) => (Lines::None, Reports::GivenWithoutGpu),
        (Kind::Bool, Bad::Zero) => (Lines::None, Reports::Given),
        (Kind::OutputDir, Bad::Empty | Bad::Long) => (warned(), Reports::Default),
        (Kind::OutputDir, _) => (Lines::None, Reports::Relative(bad.value())),
        // Taken as a path that does not load: one line from the loader, naming it.
        (Kind::Library, Bad::Empty | Bad::Long) => (warned(), Reports::Given),
        (Kind::Library, _) => (Lines::One("cannot use the".into()), Reports::Given),
        (Kind::Devices, Bad::Zero) => (Lines::None, Reports::Given),
        // A glob that does not match python3: the process still starts when it calls the ABI.
        (Kind::Processes, Bad::Empty | Bad::NonUtf8) => (warned(), Reports::Given),
        (Kind::Processes, _) => (Lines::None, Reports::Given),
        (Kind::RuntimeDir, Bad::Empty | Bad::Long) => (warned(), Reports::Given),
        (Kind::RuntimeDir, _) => (Lines::None, Reports::Given),
        _ => (warned(), Reports::Given),
    }
}

/// What the host does without the agent: the reference every case is compared with.
struct Reference {
    code: Option<i32>,
    stdout: String,
}

fn reference() -> Reference {
    let mut cmd = clean_command("python3");
    cmd.arg(host_script()).args(["steps", &STEPS.to_string()]);
    let plain = run(&mut cmd, LIMIT);
    assert_eq!(plain.status.code(), Some(5), "{}", plain.stderr);
    assert_eq!(plain.stdout, format!("host done {STEPS}\n"));
    assert_eq!(plain.stderr, "");
    Reference {
        code: plain.status.code(),
        stdout: plain.stdout,
    }
}

/// The agent's lines on stderr; fails on any other line (the host prints none).
fn agent_lines(stderr: &str) -> Result<Vec<&str>, String> {
    let mut lines = Vec::new();
    for line in stderr.lines() {
        if !line.starts_with("vllm-profiler: ") {
            return Err(format!("a line not from the agent: {line:?}"));
        }
        if line.len() > LONGEST_LINE {
            return Err(format!("a line of {} bytes: {:.200}...", line.len(), line));
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Checks that `dir` holds the reports of `pid`: exactly the files expected, the steps exact.
fn check_reports(dir: &Path, pid: u32, with_gpu: bool) -> Result<(), String> {
    let mut expected = vec![
        format::detailed_steps_file_name(pid),
        format::summary_file_name(pid),
        format::trace_file_name(pid),
    ];
    if with_gpu {
        expected.insert(1, format::gpu_history_file_name(pid));
    }
    let names = file_names(dir);
    if names != expected {
        return Err(format!("files in {}: {names:?}", dir.display()));
    }
    let summary: format::PerformanceSummary =
        serde_json::from_value(read_json(&dir.join(format::summary_file_name(pid))))
            .map_err(|e| e.to_string())?;
    let steps: format::DetailedSteps =
        serde_json::from_value(read_json(&dir.join(format::detailed_steps_file_name(pid))))
            .map_err(|e| e.to_string())?;
    let batches: Vec<u32> = steps.detailed_steps.iter().map(|s| s.batch_size).collect();
    if summary.total_steps != u64::from(STEPS) || batches != (1..=STEPS).collect::<Vec<_>>() {
        return Err(format!(
            "total_steps {} and batch sizes {batches:?}",
            summary.total_steps
        ));
    }
    if with_gpu {
        let history: format::GpuHistory =
            serde_json::from_value(read_json(&dir.join(format::gpu_history_file_name(pid))))
                .map_err(|e| e.to_string())?;
        if history.pid != pid {
            return Err(format!("gpu history of pid {}", history.pid));
        }
    }
    Ok(())
}

/// Runs the host with `var=value` added to a profiled environment and checks it all. The case
/// gets its own dir: `cwd/` is the host's working directory, `out` the output dir given.
fn run_case(
    reference: &Reference,
    var: &str,
    kind: Kind,
    bad: Bad,
    root: &Path,
) -> Result<(), String> {
    let cwd = root.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let out = root.join("out");
    let mut cmd = profiled_command("python3", &out);
    cmd.current_dir(&cwd)
        .arg(host_script())
        .args(["steps", &STEPS.to_string()])
        .env("VLLM_PROFILING_RUNTIME_DIR", root.join("run"))
        .env(var, bad.value());
    let child = run(&mut cmd, LIMIT);
    if child.status.code() != reference.code || child.stdout != reference.stdout {
        return Err(format!(
            "exit {:?} and stdout {:?} (without the agent: {:?} and {:?}); stderr:\n{}",
            child.status, child.stdout, reference.code, reference.stdout, child.stderr
        ));
    }
    let (lines, reports) = expected(var, kind, bad);
    let agent = agent_lines(&child.stderr)?;
    match &lines {
        Lines::None if agent.is_empty() => {}
        Lines::One(text) if agent.len() == 1 && agent[0].contains(text.as_str()) => {}
        _ => return Err(format!("expected {lines:?} on stderr, got {agent:?}")),
    }
    let in_cwd = |dir: &OsStr| -> Result<(), String> {
        let names = file_names(&cwd);
        let want = vec![dir.to_string_lossy().into_owned()];
        if names != want || out.exists() {
            return Err(format!(
                "cwd holds {names:?} (want {want:?}); out exists: {}",
                out.exists()
            ));
        }
        check_reports(&cwd.join(dir), child.pid, true)
    };
    match reports {
        Reports::Nowhere => {
            if out.exists() || !file_names(&cwd).is_empty() {
                return Err(format!(
                    "reports written while off: cwd {:?}, out exists: {}",
                    file_names(&cwd),
                    out.exists()
                ));
            }
            Ok(())
        }
        Reports::Given | Reports::GivenWithoutGpu => {
            if !file_names(&cwd).is_empty() {
                return Err(format!("written into cwd: {:?}", file_names(&cwd)));
            }
            check_reports(&out, child.pid, reports == Reports::Given)
        }
        Reports::Default => in_cwd(OsStr::new("profiling_results")),
        Reports::Relative(dir) => in_cwd(&dir),
    }
}

#[test]
fn every_variable_with_every_bad_value_keeps_the_host_and_falls_back_to_its_default() {
    let _ = agent_library();
    let reference = reference();
    let cases: Vec<(&str, Kind, Bad)> = VARS
        .iter()
        .flat_map(|&(var, kind)| BAD.iter().map(move |&bad| (var, kind, bad)))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(var, kind, bad)) = cases.get(i) else {
                    return;
                };
                let root = tmp.path().join(i.to_string());
                std::fs::create_dir(&root).unwrap();
                if let Err(err) = run_case(&reference, var, kind, bad, &root) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{var}={bad:?}: {err}"));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Variables the agent does not read, but a vLLM host has: their values must not leak either.
const UNREAD: &[&str] = &[
    "VLLM_API_KEY",
    "VLLM_HOST_IP",
    "VLLM_PROFILER_LIBRARY",
    "VLLM_PROFILING_SECRET_TEST",
    "VLLM_LOGGING_CONFIG_PATH",
];

#[test]
fn no_variable_value_reaches_a_report_and_reports_are_0644() {
    const MARKER: &str = "Zq7MarkerX91";
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The fake NVML loaded through a path holding the marker: the reports describe devices.
    let marked_dir = tmp.path().join(format!("lib-{MARKER}"));
    std::fs::create_dir(&marked_dir).unwrap();
    let nvml = marked_dir.join(format!("libnvml-{MARKER}.so"));
    std::os::unix::fs::symlink(fake_nvml_library(), &nvml).unwrap();
    let script = tmp.path().join("nvml.json");
    std::fs::write(
        &script,
        serde_json::json!({"devices": [{
            "name": "Fake GPU", "uuid": "GPU-00000000-1111-2222-3333-444444444444",
            "memory_total_mb": 1024,
            "frames": [{"gpu_utilization": 5, "memory_used_mb": 100, "temperature": 40,
                        "processes": [{"pid": "self", "used_memory_mb": 10}]}]}]})
        .to_string(),
    )
    .unwrap();

    let mut marked: Vec<(String, OsString)> = vec![
        ("VLLM_PROFILING_NVML_LIBRARY".into(), nvml.into_os_string()),
        (
            "VLLM_PROFILING_AMDSMI_LIBRARY".into(),
            marked_dir.join(format!("amd-{MARKER}.so")).into_os_string(),
        ),
        (
            "VLLM_PROFILING_PROMETHEUS_ADDR".into(),
            format!("{MARKER}.invalid:9090").into(),
        ),
        (
            "VLLM_PROFILING_PROCESSES".into(),
            format!("{MARKER}*,python*").into(),
        ),
        // Malformed (one warning each on stderr, defaults used): stderr is not a report.
        ("VLLM_ENABLE_GPU_MONITORING".into(), MARKER.into()),
        ("VLLM_ENABLE_LAYER_PROFILING".into(), MARKER.into()),
        ("VLLM_PROFILING_SAMPLE_INTERVAL".into(), MARKER.into()),
        ("VLLM_PROFILING_EXPORT_INTERVAL".into(), MARKER.into()),
        ("VLLM_PROFILING_MAX_HISTORY".into(), MARKER.into()),
        ("VLLM_PROFILING_DEVICES".into(), MARKER.into()),
        ("VLLM_PROFILING_SHARED_SAMPLER".into(), MARKER.into()),
        (
            "VLLM_PROFILING_RUNTIME_DIR".into(),
            tmp.path().join(format!("run-{MARKER}")).into_os_string(),
        ),
    ];
    marked.extend(UNREAD.iter().map(|v| (v.to_string(), MARKER.into())));
    // Every variable of the matrix but the switch and the output dir carries the marker.
    for (var, _) in VARS {
        if *var != "VLLM_ENABLE_PROFILING" && *var != "VLLM_PROFILING_OUTPUT_DIR" {
            assert!(
                marked.iter().any(|(m, _)| m == var),
                "{var} carries no marker"
            );
        }
    }

    // umask 022 whatever the test runner's is; `exec` keeps the pid.
    let mut cmd = clean_command("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg("python3")
        .arg(host_script())
        .args(["steps", &STEPS.to_string(), "0.05"])
        .env("LD_PRELOAD", agent_library())
        .env("VLLM_ENABLE_PROFILING", "1")
        .env("VLLM_PROFILING_OUTPUT_DIR", &out)
        .env("FAKE_NVML_SCRIPT", &script);
    for (var, value) in &marked {
        cmd.env(var, value);
    }
    let child = run(&mut cmd, LIMIT);
    assert_eq!(child.status.code(), Some(5), "{}", child.stderr);
    assert_eq!(child.stdout, format!("host done {STEPS}\n"));
    let warnings = agent_lines(&child.stderr).unwrap();
    // Seven malformed values, the amd-smi path that does not load, and the Prometheus
    // address whose host does not resolve.
    assert_eq!(warnings.len(), 9, "{warnings:?}");

    let names = file_names(&out);
    assert_eq!(names.len(), 4, "{names:?}");
    check_reports(&out, child.pid, true).unwrap();
    let history = read_reports(&out, child.pid).history;
    assert_eq!(history.devices.len(), 1, "the fake NVML was sampled");
    let runtime_dir = tmp.path().join(format!("run-{MARKER}"));
    assert!(
        !file_names(&runtime_dir).is_empty(),
        "the shared sampler used the marked runtime dir"
    );
    assert!(!history.gpu_history.is_empty());
    let out_dir_bytes = out.as_os_str().as_bytes();
    for name in &names {
        assert!(!name.contains(MARKER), "{name}");
        let path = out.join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{name} is not a regular file");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "{name}");
        let bytes = std::fs::read(&path).unwrap();
        // The output dir's own path may appear; nothing else with the marker may.
        let cleaned = replace_all(&bytes, out_dir_bytes, b"");
        assert!(
            find(&cleaned, MARKER.as_bytes()).is_none(),
            "{name} holds the marker:\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // The dir the agent created: rwxr-xr-x under umask 022.
    let dir_mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
    assert_eq!(dir_mode, 0o755);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
