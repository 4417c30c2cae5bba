//! `vllm-profiler report` and `compare` on report files written here with the format crate's
//! types, so every figure the commands print is known exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use vllm_profiler_format::{
    self as format, Comparison, Counters, GpuDevice, GpuHistory, GpuSample, LayerPerformance,
    MemorySource, PerformanceSummary, RunReport,
};

fn cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vllm-profiler"))
        .args(args)
        .output()
        .expect("the CLI runs")
}

fn layer(avg: f64, calls: u64) -> LayerPerformance {
    LayerPerformance {
        avg_duration_ms: avg,
        call_count: calls,
        total_duration_ms: avg * calls as f64,
        avg_memory_delta_mb: None,
        avg_gpu_duration_ms: None,
        total_gpu_duration_ms: None,
    }
}

fn summary(pid: u32, steps: u64, avg: f64, tokens_per_second: f64) -> PerformanceSummary {
    PerformanceSummary {
        schema_version: format::SCHEMA_VERSION,
        pid,
        role: format::Role::Process,
        rank: None,
        run_id: Some("a".into()),
        parent_pid: None,
        started_unix: Some(f64::from(pid)),
        generated_at: 1.0,
        export: None,
        last_n_steps: None,
        total_steps: steps,
        empty_steps: 0,
        avg_duration_ms: Some(avg),
        min_duration_ms: Some(avg / 2.0),
        max_duration_ms: Some(avg * 2.0),
        p50_duration_ms: Some(avg),
        p90_duration_ms: Some(avg * 1.5),
        p99_duration_ms: Some(avg * 1.9),
        total_tokens: steps * 10,
        total_batch_size: steps,
        tokens_per_second: Some(tokens_per_second),
        window_seconds: Some(1.0),
        avg_memory_mb: Some(1000.0),
        max_memory_mb: Some(1200.0),
        memory_source: MemorySource::Gpu,
        detector: Some("NVMLDetector".into()),
        layer_performance: BTreeMap::from([
            ("model.attn".to_owned(), layer(2.0, 10)),
            ("model.mlp".to_owned(), layer(1.0, 30)),
            ("lm_head".to_owned(), layer(0.5, 10)),
        ]),
        kernel_performance: None,
        torch_op_performance: None,
        torch_op_windows: None,
        counters: Counters::default(),
    }
}

fn write(dir: &Path, name: String, value: &impl serde::Serialize) {
    std::fs::write(dir.join(name), serde_json::to_vec(value).unwrap()).unwrap();
}

fn sample(utilization: f64, memory: f64) -> GpuSample {
    GpuSample {
        timestamp: 1.0,
        device_id: 0,
        gpu_utilization: Some(utilization),
        memory_used_mb: Some(memory),
        ..GpuSample::default()
    }
}

fn run_dir(dir: &Path) {
    write(
        dir,
        format::summary_file_name(11),
        &summary(11, 100, 20.0, 500.0),
    );
    // Process 12 ran on a GPU and timed its attention layer there.
    let mut on_gpu = summary(12, 5, 4.0, 50.0);
    let attn = on_gpu.layer_performance.get_mut("model.attn").unwrap();
    (attn.avg_gpu_duration_ms, attn.total_gpu_duration_ms) = (Some(7.25), Some(72.5));
    write(dir, format::summary_file_name(12), &on_gpu);
    let history = GpuHistory {
        schema_version: format::SCHEMA_VERSION,
        pid: 11,
        role: format::Role::Process,
        rank: None,
        detector: "NVMLDetector".into(),
        export: None,
        sample_interval_s: 0.1,
        devices: vec![GpuDevice {
            index: 0,
            name: Some("Fake H100".into()),
            ..GpuDevice::default()
        }],
        gpu_history: vec![
            sample(10.0, 100.0),
            sample(30.0, 300.0),
            sample(80.0, 200.0),
        ],
        host_history: Vec::new(),
        dropped_samples: 0,
    };
    write(dir, format::gpu_history_file_name(11), &history);
}

#[test]
fn report_prints_the_summary_top_layers_and_gpu_spread_per_process() {
    let tmp = tempfile::tempdir().unwrap();
    run_dir(tmp.path());
    let out = cli(&["report".as_ref(), tmp.path().as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Process 11 process (100 steps, 1000 tokens, 500.0 tokens/s)",
        "all steps           20.000  20.000  30.000  38.000  10.000  40.000",
        // Most total time first: mlp 30 ms, attn 20 ms, lm_head 5 ms.
        // Host time, named so; no device columns where no device time was measured.
        "top layers  calls  host avg ms  host total ms",
        "model.mlp      30        1.000         30.000",
        "model.attn     10        2.000         20.000",
        "lm_head        10        0.500          5.000",
        "GPU 0 Fake H100 utilization %    10.0  40.0  80.0        3",
        "GPU 0 Fake H100 memory used MiB   100   200   300        3",
        // No temperature in any sample: a dash, never a made-up 0.
        "GPU 0 Fake H100 temperature C       -     -     -        3",
        "Process 12 process (5 steps, 50 tokens, 50.0 tokens/s)",
        "top layers  calls  host avg ms  host total ms  GPU avg ms  GPU total ms",
        "model.attn     10        2.000         20.000       7.250        72.500",
        "lm_head        10        0.500          5.000           -             -",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }

    let json = cli(&["report".as_ref(), tmp.path().as_os_str(), "--json".as_ref()]);
    assert!(json.status.success());
    let report: RunReport = serde_json::from_slice(&json.stdout).unwrap();
    let [run] = &report.runs[..] else {
        panic!("one run: {report:?}")
    };
    assert_eq!(run.run_id, "a");
    assert_eq!(run.processes.len(), 2);
    let p = &run.processes[0];
    assert_eq!((p.pid, p.summary.total_steps), (11, 100));
    let names: Vec<_> = p.top_layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["model.mlp", "model.attn", "lm_head"]);
    // The run's one device, from pid 11 (pid 12 sampled nothing).
    let [gpu] = &run.gpus[..] else {
        panic!("one device: {run:?}")
    };
    let util = gpu.gpu_utilization.unwrap();
    assert_eq!((util.min, util.avg, util.max), (10.0, 40.0, 80.0));
    assert_eq!((gpu.samples, gpu.pid), (3, 11));
}

#[test]
fn report_errors_name_the_problem_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = cli(&["report".as_ref(), tmp.path().as_os_str()]);
    assert_eq!(empty.status.code(), Some(1));
    let stderr = String::from_utf8(empty.stderr).unwrap();
    assert!(
        stderr.contains("no performance_summary_<pid>.json"),
        "{stderr}"
    );

    std::fs::write(tmp.path().join("performance_summary_7.json"), b"{not json").unwrap();
    let bad = cli(&["report".as_ref(), tmp.path().as_os_str()]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("performance_summary_7.json is not a report"),
        "{stderr}"
    );
    assert!(bad.stdout.is_empty());
}

#[test]
fn compare_shows_each_change_and_flags_regressions_past_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    run_dir(&a);
    // B: steps 10 % slower (a regression at 5 %), throughput 4 % lower (not one), attn 50 %
    // slower, lm_head gone, a new layer.
    let mut slower = summary(21, 100, 22.0, 480.0);
    slower
        .layer_performance
        .insert("model.attn".into(), layer(3.0, 10));
    slower.layer_performance.remove("lm_head");
    slower
        .layer_performance
        .insert("model.rope".into(), layer(0.1, 10));
    write(&b, format::summary_file_name(21), &slower);

    let out = cli(&[
        "compare".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let comparison: Comparison = serde_json::from_slice(&out.stdout).unwrap();
    // One role on each side, `process`: A's process of that role with the most steps.
    let [c] = &comparison.roles[..] else {
        panic!("one role: {comparison:?}")
    };
    assert_eq!((c.role.as_str(), c.pid_a, c.pid_b), ("process", 11, 21));
    let metric = |name: &str| c.metrics.iter().find(|m| m.name == name).unwrap().clone();
    let avg = metric("avg_duration_ms");
    assert_eq!((avg.a, avg.b), (Some(20.0), Some(22.0)));
    assert!((avg.change_percent.unwrap() - 10.0).abs() < 1e-9);
    assert!(avg.regression);
    let tps = metric("tokens_per_second");
    assert!((tps.change_percent.unwrap() + 4.0).abs() < 1e-9);
    assert!(!tps.regression && tps.higher_is_better);
    let attn = c.layers.iter().find(|l| l.name == "model.attn").unwrap();
    assert!(attn.regression && (attn.change_percent.unwrap() - 50.0).abs() < 1e-9);
    assert_eq!(c.only_in_a, ["lm_head"]);
    assert_eq!(c.only_in_b, ["model.rope"]);
    // avg, p50, p90, p99, max all 10 % worse, and attn.
    assert_eq!((c.regressions, comparison.regressions), (6, 6));

    let table = cli(&["compare".as_ref(), a.as_os_str(), b.as_os_str()]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "avg_duration_ms      20.000    22.000  +10.0%  REGRESSION"),
        "{text}"
    );
    assert!(text.contains("only in A: lm_head") && text.contains("6 regression(s)"));

    let strict = cli(&[
        "compare".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--fail-on-regression".as_ref(),
    ]);
    assert_eq!(strict.status.code(), Some(2));
    let lenient = cli(&[
        "compare".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--threshold".as_ref(),
        "60".as_ref(),
        "--fail-on-regression".as_ref(),
    ]);
    assert_eq!(lenient.status.code(), Some(0), "nothing is 60 % worse");
}

/// Runs `report DIR`; a CLI that blocks is killed after 20 s and fails the test.
fn report_within_limit(dir: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vllm-profiler"))
        .arg("report")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the CLI runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("vllm-profiler report blocked on {}", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn report_refuses_what_is_not_a_regular_file_of_bounded_size_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join(format::summary_file_name(7));
    #[allow(unsafe_code)]
    fn fifo(path: &Path) {
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    }
    fn dev_zero_link(path: &Path) {
        std::os::unix::fs::symlink("/dev/zero", path).unwrap();
    }
    fn sparse_over_the_limit(path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        file.set_len((256 << 20) + 1).unwrap(); // sparse: no disk used
    }
    // What a case puts at the summary's path.
    type Plant = fn(&Path);
    let cases: [(&str, Plant); 3] = [
        ("is not a regular file", fifo),
        ("is not a regular file", dev_zero_link),
        (
            "is larger than 268435456 bytes, the most a report may have",
            sparse_over_the_limit,
        ),
    ];
    for (said, make) in cases {
        let _ = std::fs::remove_file(&summary);
        make(&summary);
        let out = report_within_limit(dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(&format!("{} {said}", summary.display())),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn report_reads_only_the_names_the_agent_writes() {
    let tmp = tempfile::tempdir().unwrap();
    run_dir(tmp.path());
    // Someone else's files, named almost like ours: neither doubled nor read.
    for stray in ["011", "+11", "08"] {
        write(
            tmp.path(),
            format!("performance_summary_{stray}.json"),
            &summary(11, 1, 1.0, 1.0),
        );
    }
    let json = cli(&["report".as_ref(), tmp.path().as_os_str(), "--json".as_ref()]);
    assert!(json.status.success(), "{json:?}");
    let report: RunReport = serde_json::from_slice(&json.stdout).unwrap();
    let pids: Vec<u32> = report.runs[0].processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [11, 12]);
    assert_eq!(report.runs[0].processes[0].summary.total_steps, 100);
}

/// A report file may hold any finite number: the page is still made, at once (plotters' tick
/// search never ended on an axis whose range overflowed).
#[test]
fn html_of_samples_at_the_edge_of_f64_is_made_and_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    run_dir(tmp.path());
    let mut history: GpuHistory = serde_json::from_slice(
        &std::fs::read(tmp.path().join(format::gpu_history_file_name(11))).unwrap(),
    )
    .unwrap();
    for s in &mut history.gpu_history {
        (s.power_draw, s.sm_active_percent) = (Some(f64::MAX), Some(-f64::MAX));
    }
    write(tmp.path(), format::gpu_history_file_name(11), &history);
    let page = tmp.path().join("page.html");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vllm-profiler"))
        .arg("report")
        .arg(tmp.path())
        .arg("--html")
        .arg(&page)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("report --html still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("GPU 0 power"),
        "the huge series is drawn, at the axis' limit"
    );
}
