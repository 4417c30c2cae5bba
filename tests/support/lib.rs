//! Shared helpers of the end-to-end tests and benches: build the real `libvllm_profiler.so`,
//! compile C programs against its header, run processes with a time bound, read reports back.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Path of `libvllm_profiler.so`, built once per test binary with the same profile.
pub fn agent_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build_artifact("vllm-profiler-agent", &["--lib"], "libvllm_profiler.so"))
}

/// Path of the fake NVML (`crates/fake-nvml`), scripted by `FAKE_NVML_SCRIPT`.
pub fn fake_nvml_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build_artifact("fake-nvml", &["--lib"], "libfake_nvml.so"))
}

/// Path of the fake amd-smi (`crates/fake-amdsmi`), scripted by `FAKE_AMDSMI_SCRIPT`.
pub fn fake_amdsmi_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build_artifact("fake-amdsmi", &["--lib"], "libfake_amdsmi.so"))
}

/// Path of the fake CUPTI (`crates/fake-cupti`), scripted by `FAKE_CUPTI_SCRIPT`.
pub fn fake_cupti_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build_artifact("fake-cupti", &["--lib"], "libfake_cupti.so"))
}

/// Path of the `vllm-profiler` command.
pub fn cli_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        build_artifact(
            "vllm-profiler-cli",
            &["--bin", "vllm-profiler"],
            "vllm-profiler",
        )
    })
}

/// Builds `package` with the tests' profile and returns the artifact named `file_name`.
fn build_artifact(package: &str, target: &[&str], file_name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", package])
        .args(target)
        .arg("--message-format=json-render-diagnostics");
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let output = cmd.stderr(Stdio::inherit()).output().expect("cargo runs");
    assert!(output.status.success(), "building {package} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .flat_map(|msg| {
            let mut files = msg["filenames"].as_array().cloned().unwrap_or_default();
            files.extend(msg["executable"].as_str().map(Value::from));
            files
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.file_name().is_some_and(|n| n == file_name))
        .unwrap_or_else(|| panic!("cargo reported no {file_name}"))
}

/// Whether this machine has an NVIDIA driver, so that the real NVML answers detection.
pub fn has_nvidia_driver() -> bool {
    Path::new("/dev/nvidiactl").exists()
}

/// Directory of the generated `vllm_profiler.h`.
pub fn include_dir() -> PathBuf {
    workspace_root().join("crates/agent/include")
}

/// Compiles a C program against the header, linked with the agent library.
pub fn compile_c(source: &Path, out_dir: &Path) -> PathBuf {
    let lib_dir = agent_library().parent().expect("library has a dir");
    let exe = out_dir.join(source.file_stem().expect("source has a name"));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-D_POSIX_C_SOURCE=200809L",
        ])
        .arg("-I")
        .arg(include_dir())
        .arg(source)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lvllm_profiler")
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success(), "compiling {} failed", source.display());
    exe
}

/// The Python package's directory: on `PYTHONPATH`, the drivers import its ctypes binding.
pub fn python_package_dir() -> PathBuf {
    workspace_root().join("python")
}

/// A command with every inherited `VLLM_*` variable and `LD_PRELOAD` removed, and
/// `PYTHONPATH` the package's directory (as the pytest suite's), so that a Python driver
/// imports the package's one ctypes binding.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("VLLM_") || key_text == "LD_PRELOAD" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PYTHONPATH", python_package_dir());
    cmd
}

/// `clean_command` with the agent preloaded and profiling on, reporting into `out_dir`. The
/// runtime dir where processes share GPU samples is `out_dir` with `.runtime` appended: tests
/// that run at once, each with its own fake GPUs of the same UUIDs, must not share samples.
pub fn profiled_command(program: impl AsRef<std::ffi::OsStr>, out_dir: &Path) -> Command {
    let mut cmd = clean_command(program);
    let mut runtime_dir = out_dir.as_os_str().to_owned();
    runtime_dir.push(".runtime");
    cmd.env("LD_PRELOAD", agent_library())
        .env("VLLM_ENABLE_PROFILING", "1")
        .env("VLLM_PROFILING_OUTPUT_DIR", out_dir)
        .env("VLLM_PROFILING_RUNTIME_DIR", runtime_dir);
    cmd
}

/// What a finished process left.
#[derive(Debug)]
pub struct Finished {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, killing it and failing the test if it outlives `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("process starts");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        pid,
        status,
        stdout: out.join().expect("reader"),
        stderr: err.join().expect("reader"),
    }
}

/// Fails the test, with the process's output, unless it exited with status 0.
pub fn assert_success(run: &Finished) {
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// Parses a report file.
pub fn read_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// The four report files of process `pid` in `dir`, parsed with the format crate's types.
pub struct Reports {
    pub summary: vllm_profiler_format::PerformanceSummary,
    pub steps: vllm_profiler_format::DetailedSteps,
    pub history: vllm_profiler_format::GpuHistory,
    pub trace: vllm_profiler_format::TraceFile,
}

pub fn read_reports(dir: &Path, pid: u32) -> Reports {
    use vllm_profiler_format as f;
    let typed = |name: String| read_json(&dir.join(name));
    Reports {
        summary: serde_json::from_value(typed(f::summary_file_name(pid))).expect("summary schema"),
        steps: serde_json::from_value(typed(f::detailed_steps_file_name(pid)))
            .expect("detailed steps schema"),
        history: serde_json::from_value(typed(f::gpu_history_file_name(pid)))
            .expect("gpu history schema"),
        trace: serde_json::from_value(typed(f::trace_file_name(pid))).expect("trace schema"),
    }
}

/// Names of the files in `dir` (empty when it does not exist), sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What the agent must report (timestamp aside) for a frame of the fake GPU script of a device with `total_mb` memory.
pub fn expected_gpu_sample(
    device_id: u32,
    total_mb: f64,
    frame: &Value,
) -> vllm_profiler_format::GpuSample {
    let number = |key: &str| frame.get(key).and_then(Value::as_f64);
    let gpm = |key: &str| {
        frame
            .get("gpm")
            .and_then(|g| g.get(key))
            .and_then(Value::as_f64)
    };
    let used = number("memory_used_mb");
    let own = frame["processes"].as_array().map(|ps| {
        ps.iter()
            .filter(|p| p["pid"] == "self")
            .map(|p| p["used_memory_mb"].as_f64().unwrap())
            .sum::<f64>()
    });
    vllm_profiler_format::GpuSample {
        timestamp: 0.0,
        device_id,
        gpu_utilization: number("gpu_utilization"),
        memory_utilization: used.map(|u| u / total_mb * 100.0),
        temperature: number("temperature"),
        power_draw: number("power_draw_mw").map(|mw| mw / 1000.0),
        memory_used_mb: used,
        memory_total_mb: Some(total_mb),
        memory_free_mb: used.map(|u| total_mb - u),
        memory_controller_utilization: number("memory_controller_utilization"),
        power_limit: number("power_limit_mw").map(|mw| mw / 1000.0),
        sm_clock_mhz: number("sm_clock_mhz"),
        memory_clock_mhz: number("memory_clock_mhz"),
        process_memory_used_mb: Some(own.unwrap_or(0.0)),
        // The figures of an interval that ends in this frame: a device's first sample has
        // none, which the caller says.
        sm_active_percent: gpm("SM_UTIL"),
        sm_occupancy_percent: gpm("SM_OCCUPANCY"),
        tensor_active_percent: gpm("ANY_TENSOR_UTIL"),
        dram_bandwidth_percent: gpm("DRAM_BW_UTIL"),
    }
}

/// The samples of one device in a GPU history, oldest first.
pub fn device_samples(
    history: &vllm_profiler_format::GpuHistory,
    device_id: u32,
) -> Vec<vllm_profiler_format::GpuSample> {
    let mut samples: Vec<_> = (history.gpu_history.iter())
        .filter(|s| s.device_id == device_id)
        .cloned()
        .collect();
    samples.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    samples
}

/// Whether `program` is on the `PATH`.
/// Set by `.ci/run`: a test that would skip for want of a tool fails instead, so that a broken
/// install step cannot pass as a skip.
pub const REQUIRE_TOOLS: &str = "VLLM_PROFILER_REQUIRE_TOOLS";

/// A test cannot run here for want of a tool (`reason` says which, and how to get it): it
/// skips, saying so, or fails where `VLLM_PROFILER_REQUIRE_TOOLS` is set.
pub fn missing_tool(reason: &str) {
    if std::env::var_os(REQUIRE_TOOLS).is_some() {
        panic!("{reason}; {REQUIRE_TOOLS} is set, so this fails instead of skipping");
    }
    eprintln!("skipped: {reason}");
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `profiled_command` for `program`, sampling every `interval` seconds a fake NVML with one
/// device called `name` that plays `frames` (the script goes to `dir/nvml.json`).
pub fn profiled_on_fake_gpu(
    program: impl AsRef<std::ffi::OsStr>,
    dir: &Path,
    out: &Path,
    name: &str,
    frames: &[Value],
    interval: &str,
) -> Command {
    let devices = serde_json::json!({"devices": [{"name": name, "uuid": format!("GPU-{name}"),
        "memory_total_mb": 16384, "frames": frames}]});
    profiled_on_fake_nvml(program, dir, out, &devices, interval)
}

/// `profiled_command` for `program`, sampling every `interval` seconds the fake NVML playing
/// `script` (written to `dir/nvml.json`); amd-smi is pointed at a library that is not there.
pub fn profiled_on_fake_nvml(
    program: impl AsRef<std::ffi::OsStr>,
    dir: &Path,
    out: &Path,
    script: &Value,
    interval: &str,
) -> Command {
    let path = dir.join("nvml.json");
    std::fs::write(&path, script.to_string()).expect("script written");
    let mut cmd = profiled_command(program, out);
    cmd.env("FAKE_NVML_SCRIPT", &path)
        .env("VLLM_PROFILING_NVML_LIBRARY", fake_nvml_library())
        .env("VLLM_PROFILING_AMDSMI_LIBRARY", dir.join("no-amd.so"))
        .env("VLLM_PROFILING_SAMPLE_INTERVAL", interval);
    cmd
}
