//! End to end: the real `libvllm_profiler.so`, preloaded or loaded into real C and Python
//! processes, with the reports read back from disk.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vllm_profiler_format::{DetailedSteps, MemorySource, PerformanceSummary};
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

fn python_script() -> PathBuf {
    workspace_root().join("tests/data/record_steps.py")
}

fn c_program(dir: &Path) -> PathBuf {
    compile_c(&workspace_root().join("tests/data/record_steps.c"), dir)
}

/// Checks the reports of the workload both record_steps programs run: step i (from 0) has
/// batch size i + 1, i * 10 + 10 tokens, and spans model > model.layers.{0,1} sleeping 2 and
/// 1 ms.
fn check_workload(dir: &Path, pid: u32, steps: u64, max_history: u64) {
    let r = read_reports(dir, pid);
    let s = &r.summary;
    assert_eq!(s.pid, pid);
    assert_eq!(s.total_steps, steps);
    assert_eq!(s.total_tokens, 10 * steps * (steps + 1) / 2);
    assert_eq!(s.total_batch_size, steps * (steps + 1) / 2);
    assert!(s.min_duration_ms.unwrap() >= 3.0, "{:?}", s.min_duration_ms);
    assert!(s.avg_duration_ms.unwrap() >= 3.0);
    for name in ["model", "model.layers.0", "model.layers.1"] {
        assert_eq!(s.layer_performance[name].call_count, steps, "{name}");
    }
    assert!(s.layer_performance["model.layers.0"].avg_duration_ms >= 2.0);
    assert!(s.layer_performance["model.layers.1"].avg_duration_ms >= 1.0);
    let kept = steps.min(max_history);
    assert_eq!(s.counters.kept_steps, kept);
    assert_eq!(s.counters.dropped_steps, steps - kept);
    assert_eq!(s.counters.lost_events, 0);
    if !has_nvidia_driver() {
        // Where a real GPU answers, steps carry GPU memory instead (tests/gpu_e2e.rs).
        assert_eq!(s.memory_source, MemorySource::HostRss);
    }

    assert_eq!(r.steps.detailed_steps.len() as u64, kept);
    assert_eq!(r.steps.dropped_steps, steps - kept);
    for (step, i) in r.steps.detailed_steps.iter().zip(steps - kept..) {
        assert_eq!(step.step_id, i);
        assert_eq!(u64::from(step.batch_size), i + 1);
        assert_eq!(u64::from(step.num_tokens), 10 * (i + 1));
        assert!(step.duration_ms >= 3.0);
        let layer0 = &step.layer_timings["model.layers.0"];
        assert_eq!(layer0.call_count, 1);
        assert_eq!(layer0.parent.as_deref(), Some("model"));
        assert_eq!(layer0.depth, 1);
        assert!(layer0.duration_ms >= 2.0);
        assert!(step.layer_timings["model"].duration_ms >= 3.0);
        assert!(
            step.memory_used_mb.is_some_and(|m| m > 0.0),
            "host RSS per step"
        );
        assert!(step.gpu_metrics.start_utilization.is_none(), "no GPU: null");
    }
    assert_eq!(r.history.detector, "CPUDetector");
    assert!(r.history.gpu_history.is_empty());
    assert!(!r.history.host_history.is_empty());
}

#[test]
fn c_program_under_ld_preload_writes_exact_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = c_program(tmp.path());
    let out = tmp.path().join("reports");
    let mut cmd = profiled_command(&exe, &out);
    cmd.arg("25").env("VLLM_PROFILING_MAX_HISTORY", "10");
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    assert_eq!(child.stdout, "", "the agent prints nothing to stdout");
    assert_eq!(pid_from_files(&out), child.pid);
    check_workload(&out, child.pid, 25, 10);
}

#[test]
fn python_ctypes_under_ld_preload_writes_the_same_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = profiled_command("python3", tmp.path());
    cmd.arg(python_script())
        .args(["record", "25"])
        .env("VLLM_PROFILING_MAX_HISTORY", "10");
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    assert_eq!(child.stdout, "");
    assert_eq!(pid_from_files(tmp.path()), child.pid);
    check_workload(tmp.path(), child.pid, 25, 10);
}

/// The one pid whose summary is in `dir`.
fn pid_from_files(dir: &Path) -> u32 {
    let names = file_names(dir);
    let pids: Vec<u32> = names
        .iter()
        .filter_map(|n| vllm_profiler_format::summary_pid(n))
        .collect();
    assert_eq!(
        pids.len(),
        1,
        "expected one process's reports, found {names:?}"
    );
    assert_eq!(
        names.len(),
        4,
        "four reports (summary, steps, GPU history, trace), no temporaries left: {names:?}"
    );
    pids[0]
}

#[test]
fn bad_calls_return_error_codes_with_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = c_program(tmp.path());
    let mut cmd = profiled_command(&exe, &tmp.path().join("reports"));
    cmd.arg("errors");
    assert_success(&run(&mut cmd, LIMIT));
}

#[test]
fn threads_record_concurrently_with_exports_and_every_event_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = c_program(tmp.path());
    let out = tmp.path().join("reports");
    let mut cmd = profiled_command(&exe, &out);
    cmd.arg("threads");
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    let lost: u64 = child
        .stdout
        .trim()
        .strip_prefix("lost ")
        .and_then(|n| n.parse().ok())
        .expect("the program reports what came back as lost");
    let s = read_reports(&out, child.pid).summary;
    // 4 threads x 5000 steps, one span each: every event is either recorded or counted lost,
    // and the count matches what the calls returned.
    assert_eq!(s.counters.lost_events, lost);
    assert_eq!(s.total_steps + s.counters.total_spans + lost, 40_000);
    assert_eq!(s.total_tokens, 3 * s.total_steps);
    assert_eq!(s.counters.auto_closed_spans, 0);
}

#[test]
fn concurrent_forks_while_reconfiguring_never_hang_a_child() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = c_program(tmp.path());
    let out = tmp.path().join("reports");
    let mut cmd = profiled_command(&exe, &out);
    cmd.arg("forks");
    let parent = run(&mut cmd, Duration::from_secs(120));
    assert_success(&parent);
    // The children _exit: only the parent may have written reports. A child that lived to
    // its collector's first turn left its journal (it recorded a step), never the parent's,
    // whose final export removed its own. A child that _exits in the middle of writing its
    // snapshot leaves that snapshot's hidden temporary file, under its own pid.
    let suffix = format!("_{}.json", parent.pid);
    let names = file_names(&out);
    let (journals, reports): (Vec<&String>, Vec<&String>) = names
        .iter()
        .partition(|n| n.trim_start_matches('.').starts_with("journal_"));
    assert!(reports.iter().all(|n| n.ends_with(&suffix)), "{names:?}");
    let parents = format!("journal_{}.", parent.pid);
    assert!(
        journals
            .iter()
            .all(|n| !n.trim_start_matches('.').starts_with(&parents)),
        "{names:?}"
    );
}

#[test]
fn ctypes_cdll_then_enable_null_takes_the_environment() {
    // No VLLM_ENABLE_PROFILING: the library loads inert, and enable(NULL) starts it.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = clean_command("python3");
    cmd.arg(python_script())
        .args(["cdll-enable"])
        .arg(agent_library())
        .env("VLLM_PROFILING_OUTPUT_DIR", tmp.path());
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    let pid = pid_from_files(tmp.path());
    assert_eq!(read_reports(tmp.path(), pid).summary.total_steps, 4);
}

#[test]
fn ctypes_cdll_with_profiling_env_does_not_deadlock_and_json_config_wins() {
    // With the env var set, the constructor runs under the loader lock of dlopen and starts
    // the agent there: it must not wait for its threads. enable(JSON) then moves the output.
    let tmp = tempfile::tempdir().unwrap();
    let json_dir = tmp.path().join("from_json");
    let env_dir = tmp.path().join("from_env");
    let config = format!(r#"{{"output_dir": "{}"}}"#, json_dir.display());
    let mut cmd = clean_command("python3");
    cmd.arg(python_script())
        .arg("cdll-enable")
        .arg(agent_library())
        .arg(config)
        .env("VLLM_ENABLE_PROFILING", "1")
        .env("VLLM_PROFILING_OUTPUT_DIR", &env_dir);
    let child = run(&mut cmd, Duration::from_secs(30));
    assert_success(&child);
    let pid = pid_from_files(&json_dir);
    assert_eq!(read_reports(&json_dir, pid).summary.total_steps, 4);
    assert!(
        file_names(&env_dir).is_empty(),
        "{:?}",
        file_names(&env_dir)
    );
}

#[test]
fn periodic_export_writes_valid_files_while_the_process_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(200);
    let mut cmd = profiled_command("python3", tmp.path());
    cmd.arg(python_script())
        .args(["periodic", "7"])
        .env("VLLM_PROFILING_EXPORT_INTERVAL", "0.2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "recorded\n");
    std::thread::sleep(interval * 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let summary_path = tmp.path().join(format!("performance_summary_{pid}.json"));
    let total = loop {
        let total = summary_path
            .exists()
            .then(|| read_json(&summary_path)["total_steps"].as_u64())
            .flatten();
        if total == Some(7) || Instant::now() > deadline {
            break total;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        still_running,
        "the files must come from the periodic export, not the exit"
    );
    assert_eq!(total, Some(7));
    let steps = read_json(&tmp.path().join(format!("detailed_steps_{pid}.json")));
    assert_eq!(steps["detailed_steps"].as_array().unwrap().len(), 7);
    let history = read_json(&tmp.path().join(format!("gpu_history_{pid}.json")));
    assert!(!history["host_history"].as_array().unwrap().is_empty());
}

#[test]
fn non_matching_process_is_untouched_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reports");
    let script = "echo $(cat /etc/hostname)";
    let plain = run(clean_command("/bin/sh").args(["-c", script]), LIMIT);
    let mut cmd = profiled_command("/bin/sh", &out);
    cmd.args(["-c", script]);
    let preloaded = run(&mut cmd, LIMIT);
    assert_success(&preloaded);
    assert!(!plain.stdout.is_empty());
    assert_eq!(preloaded.stdout, plain.stdout);
    assert_eq!(preloaded.stderr, "");
    assert!(!out.exists(), "no files, not even the dir");
}

#[test]
fn malformed_env_value_is_one_stderr_line_and_stdout_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = profiled_command("python3", tmp.path());
    cmd.args(["-c", "print('hello')"])
        .env("VLLM_PROFILING_SAMPLE_INTERVAL", "fast");
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    assert_eq!(child.stdout, "hello\n");
    let lines: Vec<&str> = child.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", child.stderr);
    assert!(lines[0].contains("VLLM_PROFILING_SAMPLE_INTERVAL"));
    assert!(lines[0].contains("\"fast\""));
    assert!(lines[0].contains("using 0.1"));
}

#[test]
fn forked_child_writes_only_its_own_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = profiled_command("python3", tmp.path());
    cmd.arg(python_script()).arg("fork");
    let parent = run(&mut cmd, LIMIT);
    assert_success(&parent);
    let pids: Vec<u32> = parent
        .stdout
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (child, quiet) = (pids[0], pids[1]);
    let batch_sizes = |pid: u32| -> (u64, Vec<u32>) {
        let r = read_reports(tmp.path(), pid);
        assert_eq!(r.summary.pid, pid);
        let batches = r
            .steps
            .detailed_steps
            .iter()
            .map(|s| s.batch_size)
            .collect();
        (r.summary.total_steps, batches)
    };
    // 3 steps before the fork and 1 after; the child's 2 steps and none of the parent's.
    assert_eq!(batch_sizes(parent.pid), (4, vec![1, 2, 3, 4]));
    assert_eq!(batch_sizes(child), (2, vec![101, 102]));

    let names = file_names(tmp.path());
    assert!(
        !names.iter().any(|n| n.contains(&quiet.to_string())),
        "a child that recorded nothing writes nothing: {names:?}"
    );
    assert_eq!(names.len(), 8, "four reports each: {names:?}");
}

#[test]
fn example_serving_loop_is_profiled_without_changing_its_output() {
    let tmp = tempfile::tempdir().unwrap();
    let example = workspace_root().join("examples/serving_loop.py");
    let args = ["--requests", "12", "--decode-tokens", "4"];
    let plain = run(clean_command("python3").arg(&example).args(args), LIMIT);
    let mut cmd = profiled_command("python3", tmp.path());
    cmd.arg(&example).args(args);
    let profiled = run(&mut cmd, LIMIT);
    assert_success(&profiled);
    assert_eq!(
        profiled.stdout, plain.stdout,
        "the agent changes nothing the host prints"
    );
    // "served 12 reviews in N engine steps"
    let engine_steps: u64 = profiled
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "in")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the loop reports its step count");
    let summary = read_reports(tmp.path(), profiled.pid).summary;
    assert_eq!(summary.total_steps, engine_steps);
    for layer in ["model.embed_tokens", "model.layers.1.mlp", "sampler"] {
        assert_eq!(
            summary.layer_performance[layer].call_count, engine_steps,
            "{layer}"
        );
    }
}

#[test]
fn span_end_annotated_through_the_c_abi_writes_exact_memory_deltas_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(
        &workspace_root().join("tests/data/span_annotations.c"),
        tmp.path(),
    );
    let out = tmp.path().join("reports");
    let mut cmd = profiled_command(&exe, &out);
    // No sampler: a gpu_history file would depend on whether a tick came before the exit.
    cmd.env("VLLM_ENABLE_GPU_MONITORING", "0");
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    assert_eq!(child.stdout, "");
    let raw_steps = read_json(&out.join(format!("detailed_steps_{}.json", child.pid)));
    let raw_summary = read_json(&out.join(format!("performance_summary_{}.json", child.pid)));
    let detailed: DetailedSteps = serde_json::from_value(raw_steps.clone()).unwrap();
    let summary: PerformanceSummary = serde_json::from_value(raw_summary.clone()).unwrap();

    let steps = &detailed.detailed_steps;
    assert_eq!(steps.len(), 2);
    let layers = &steps[0].layer_timings;
    let layer0 = &layers["model.layers.0"];
    assert_eq!(layer0.call_count, 2);
    assert_eq!(layer0.memory_delta_mb, Some(3.75), "1.5 + 2.25");
    assert_eq!(layer0.input_shapes, Some(vec![vec![8, 512, 768]]), "first");
    assert_eq!(layer0.output_shapes, Some(vec![vec![8, 512, 768]]));
    // Rejected shapes: the three spans are ended and keep their memory delta.
    let layer2 = &layers["model.layers.2"];
    assert_eq!(layer2.call_count, 3);
    assert_eq!(layer2.memory_delta_mb, Some(24.0));
    assert_eq!(
        (&layer2.input_shapes, &layer2.output_shapes),
        (&None, &None)
    );
    let layer3 = &layers["model.layers.3"];
    assert_eq!(layer3.memory_delta_mb, None, "infinite: none");
    assert_eq!(layer3.input_shapes, None);
    assert_eq!(layer3.output_shapes, Some(vec![vec![4, 16]]));
    assert_eq!(
        steps[1].layer_timings["model.layers.0"].memory_delta_mb,
        Some(-0.75)
    );
    assert_eq!(steps[1].layer_timings["model.layers.0"].input_shapes, None);

    // Absent annotations are absent keys, not nulls.
    let layer1 = raw_steps["detailed_steps"][0]["layer_timings"]["model.layers.1"]
        .as_object()
        .unwrap();
    let mut keys: Vec<&str> = layer1.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "call_count",
            "depth",
            "duration_ms",
            "gpu_duration_ms",
            "parent"
        ]
    );
    assert!(
        raw_steps["detailed_steps"][0]["layer_timings"]["model.layers.3"]
            .get("input_shapes")
            .is_none()
    );

    let perf = &summary.layer_performance;
    assert_eq!(perf["model.layers.0"].call_count, 3);
    assert_eq!(
        perf["model.layers.0"].avg_memory_delta_mb,
        Some(1.0),
        "(1.5 + 2.25 - 0.75) / 3"
    );
    assert_eq!(perf["model.layers.1"].avg_memory_delta_mb, None);
    assert_eq!(perf["model.layers.2"].call_count, 3);
    assert_eq!(perf["model.layers.2"].avg_memory_delta_mb, Some(8.0));
    assert_eq!(perf["model.layers.3"].avg_memory_delta_mb, None);
    assert!(raw_summary["layer_performance"]["model.layers.1"]
        .get("avg_memory_delta_mb")
        .is_none());
    assert_eq!(summary.counters.total_spans, 8);
    assert_eq!(summary.counters.lost_events, 0);
}

#[test]
fn finish_writes_the_final_reports_once_for_a_host_that_leaves_with_os_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reports");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(python_script()).arg("finish-then-exit");
    let child = run(&mut cmd, LIMIT);
    assert_success(&child);
    // 1: written; 0: nothing left to do; a late step is refused (handle 0).
    assert_eq!(child.stdout.trim(), "1 0 0");
    let reports = read_reports(&out, child.pid);
    assert_eq!(reports.summary.total_steps, 3);
    assert_eq!(reports.steps.detailed_steps.len(), 3);
}
