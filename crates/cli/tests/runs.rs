//! A dir of two server runs, written here with the format crate's types: `report` groups each
//! run's processes and names their roles, `compare` goes role by role, and `trace` merges one
//! run's traces on one clock with each device's counters once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use vllm_profiler_format::{
    self as format, Comparison, Counters, GpuDevice, GpuHistory, GpuSample, LayerPerformance,
    MemorySource, PerformanceSummary, Role, RunReport, TraceArg, TraceEvent, TraceFile,
};

fn cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vllm-profiler"))
        .args(args)
        .output()
        .expect("the CLI runs")
}

struct Process {
    pid: u32,
    role: Role,
    rank: Option<u32>,
    run: &'static str,
    parent: u32,
    started: f64,
    steps: u64,
    avg_ms: f64,
    layer_ms: Option<f64>,
}

fn summary(p: &Process) -> PerformanceSummary {
    PerformanceSummary {
        schema_version: format::SCHEMA_VERSION,
        pid: p.pid,
        role: p.role,
        rank: p.rank,
        run_id: Some(p.run.to_owned()),
        parent_pid: Some(p.parent),
        started_unix: Some(p.started),
        generated_at: p.started + 10.0,
        export: None,
        last_n_steps: None,
        total_steps: p.steps,
        empty_steps: 0,
        avg_duration_ms: (p.steps > 0).then_some(p.avg_ms),
        min_duration_ms: None,
        max_duration_ms: None,
        p50_duration_ms: (p.steps > 0).then_some(p.avg_ms),
        p90_duration_ms: None,
        p99_duration_ms: None,
        total_tokens: p.steps * 4,
        total_batch_size: p.steps,
        tokens_per_second: None,
        window_seconds: None,
        avg_memory_mb: None,
        max_memory_mb: None,
        memory_source: MemorySource::None,
        detector: None,
        layer_performance: p
            .layer_ms
            .map(|ms| {
                BTreeMap::from([(
                    "model.layers.0".to_owned(),
                    LayerPerformance {
                        avg_duration_ms: ms,
                        call_count: p.steps,
                        total_duration_ms: ms * p.steps as f64,
                        avg_memory_delta_mb: None,
                    },
                )])
            })
            .unwrap_or_default(),
        counters: Counters::default(),
    }
}

fn write(dir: &Path, name: String, value: &impl serde::Serialize) {
    std::fs::write(dir.join(name), serde_json::to_vec(value).unwrap()).unwrap();
}

const UUID: &str = "GPU-0000aaaa";

/// A GPU history of `samples` samples of one device, starting at `at`.
fn history(pid: u32, samples: usize, at: f64) -> GpuHistory {
    GpuHistory {
        schema_version: format::SCHEMA_VERSION,
        pid,
        role: Role::Process,
        rank: None,
        detector: "NVMLDetector".into(),
        export: None,
        sample_interval_s: 0.1,
        devices: vec![GpuDevice {
            index: 0,
            name: Some("Fake".into()),
            uuid: Some(UUID.into()),
            gpu_type: "nvidia".into(),
            memory_total_mb: None,
        }],
        gpu_history: (0..samples)
            .map(|i| GpuSample {
                timestamp: at + i as f64 * 0.1,
                device_id: 0,
                gpu_utilization: Some(50.0 + i as f64),
                memory_used_mb: Some(1000.0),
                ..GpuSample::default()
            })
            .collect(),
        host_history: Vec::new(),
        dropped_samples: 0,
    }
}

fn event(
    ph: &'static str,
    name: &str,
    ts: f64,
    dur: Option<f64>,
    pid: u32,
    tid: u32,
) -> TraceEvent {
    TraceEvent {
        name: name.to_owned(),
        cat: None,
        ph: Cow::Borrowed(ph),
        ts,
        dur,
        pid,
        tid,
        args: BTreeMap::new(),
    }
}

/// A per-process trace: a step with a span inside it on thread 7, and a GPU counter.
fn trace(pid: u32, started: f64) -> TraceFile {
    let mut step = event("X", "step 0", 1000.0, Some(500.0), pid, 7);
    step.args
        .insert(Cow::Borrowed("batch_size"), TraceArg::Count(3));
    TraceFile {
        trace_events: vec![
            event("M", "process_name", 0.0, None, pid, 0),
            event("M", "thread_name", 0.0, None, pid, 7),
            step,
            event("X", "model.layers.0", 1100.0, Some(200.0), pid, 7),
            event("C", "GPU 0 utilization (%)", 1000.0, None, pid, 0),
        ],
        display_time_unit: "ms".into(),
        other_data: BTreeMap::from([(
            TraceFile::STARTED_UNIX.to_owned(),
            TraceArg::Number(started),
        )]),
    }
}

/// Run `a` (started at 1000 s): an API server, an engine core, a worker without the run id
/// (its parent passed none) whose parent is the engine. Run `b` (at 2000 s): an engine core
/// and two workers.
fn two_runs(dir: &Path) {
    let p = |pid, role, rank, run, parent, started, steps, avg_ms, layer_ms| Process {
        pid,
        role,
        rank,
        run,
        parent,
        started,
        steps,
        avg_ms,
        layer_ms,
    };
    let processes = [
        p(100, Role::ApiServer, None, "a", 1, 1000.0, 0, 0.0, None),
        p(
            101,
            Role::EngineCore,
            None,
            "a",
            100,
            1001.0,
            50,
            10.0,
            None,
        ),
        p(
            102,
            Role::Worker,
            Some(0),
            "",
            101,
            1002.0,
            50,
            8.0,
            Some(1.0),
        ),
        p(200, Role::EngineCore, None, "b", 1, 2000.0, 60, 12.0, None),
        p(
            201,
            Role::Worker,
            Some(0),
            "b",
            200,
            2001.0,
            60,
            9.0,
            Some(1.5),
        ),
        p(
            202,
            Role::Worker,
            Some(1),
            "b",
            200,
            2001.5,
            60,
            9.0,
            Some(1.5),
        ),
    ];
    for process in &processes {
        let mut s = summary(process);
        if process.run.is_empty() {
            s.run_id = None;
        }
        write(dir, format::summary_file_name(process.pid), &s);
        write(
            dir,
            format::trace_file_name(process.pid),
            &trace(process.pid, process.started),
        );
    }
    // Both engine processes of run b saw the device; the worker saw it more.
    write(
        dir,
        format::gpu_history_file_name(200),
        &history(200, 2, 2000.0),
    );
    write(
        dir,
        format::gpu_history_file_name(201),
        &history(201, 5, 2001.0),
    );
}

#[test]
fn report_groups_each_runs_processes_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    two_runs(tmp.path());
    let json = cli(&["report".as_ref(), tmp.path().as_os_str(), "--json".as_ref()]);
    assert!(json.status.success(), "{json:?}");
    let report: RunReport = serde_json::from_slice(&json.stdout).unwrap();
    let shape: Vec<(&str, Vec<(u32, &str)>)> = report
        .runs
        .iter()
        .map(|r| {
            let members = r
                .processes
                .iter()
                .map(|p| (p.pid, p.label.as_str()))
                .collect();
            (r.run_id.as_str(), members)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "a",
                vec![
                    (100, "api_server"),
                    (101, "engine_core"),
                    (102, "worker rank 0")
                ]
            ),
            (
                "b",
                vec![
                    (200, "engine_core"),
                    (201, "worker rank 0"),
                    (202, "worker rank 1")
                ]
            ),
        ]
    );
    // The device once, from the process that sampled it most.
    let gpus: Vec<(u32, usize)> = report.runs[1]
        .gpus
        .iter()
        .map(|g| (g.pid, g.samples))
        .collect();
    assert_eq!(gpus, [(201, 5)]);
    assert!(report.runs[0].gpus.is_empty());

    let text = cli(&["report".as_ref(), tmp.path().as_os_str()]);
    let text = String::from_utf8(text.stdout).unwrap();
    for line in [
        "Run a: 3 process(es)",
        "Run b: 3 process(es)",
        "GPUs of run b (each device once)",
        "Process 102 worker rank 0 (50 steps, 200 tokens)",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }
    assert_eq!(
        text.matches("GPU 0 Fake utilization %").count(),
        1,
        "{text}"
    );
}

#[test]
fn compare_goes_role_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    two_runs(&a); // its latest run: b
    two_runs(&b);
    // B's run b: the engine 50 % slower, worker rank 1 gone.
    let mut engine: PerformanceSummary =
        serde_json::from_slice(&std::fs::read(b.join(format::summary_file_name(200))).unwrap())
            .unwrap();
    engine.avg_duration_ms = Some(18.0);
    write(&b, format::summary_file_name(200), &engine);
    std::fs::remove_file(b.join(format::summary_file_name(202))).unwrap();
    let out = cli(&[
        "compare".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let c: Comparison = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((c.run_a.as_str(), c.run_b.as_str()), ("b", "b"));
    let roles: Vec<(&str, u32, u32, usize)> = c
        .roles
        .iter()
        .map(|r| (r.role.as_str(), r.pid_a, r.pid_b, r.regressions))
        .collect();
    assert_eq!(
        roles,
        [("engine_core", 200, 200, 1), ("worker rank 0", 201, 201, 0)]
    );
    assert_eq!(c.roles_only_in_a, ["worker rank 1"]);
    assert!(c.roles_only_in_b.is_empty());
    assert_eq!(c.regressions, 1);
}

fn arg_count(event: &Value, key: &str) -> Option<u64> {
    event["args"][key].as_u64()
}

#[test]
fn trace_merges_a_run_on_one_clock_with_each_device_once() {
    let tmp = tempfile::tempdir().unwrap();
    two_runs(tmp.path());
    let out_file = tmp.path().join("run.json");
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("holds other runs too (a); merged the latest, b"),
        "{stderr}"
    );
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let events = merged["traceEvents"].as_array().unwrap();
    assert_eq!(merged["otherData"]["run_id"], "b");
    assert_eq!(merged["otherData"]["processes"], 3);
    // Processes named by role, in role order; the GPUs on a process of their own.
    let mut names: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (0, "GPUs"),
            (200, "engine_core"),
            (201, "worker rank 0"),
            (202, "worker rank 1")
        ]
    );
    // Steps and spans on the Unix clock: the process's start plus the event's offset.
    let steps: Vec<(u64, f64)> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "step 0")
        .map(|e| (e["pid"].as_u64().unwrap(), e["ts"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            (200, 2000.0e6 + 1000.0),
            (201, 2001.0e6 + 1000.0),
            (202, 2001.5e6 + 1000.0)
        ]
    );
    // Integers stay integers.
    let step = events.iter().find(|e| e["name"] == "step 0").unwrap();
    assert_eq!(arg_count(step, "batch_size"), Some(3));
    assert!(step["args"]["batch_size"].is_u64());
    // Nesting: on each thread, each event ends inside the one it starts in.
    let mut by_thread: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let ts = e["ts"].as_f64().unwrap();
        let end = ts + e["dur"].as_f64().unwrap();
        by_thread
            .entry((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
            .or_default()
            .push((ts, end));
    }
    for intervals in by_thread.values_mut() {
        intervals.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut open: Vec<f64> = Vec::new();
        for (start, end) in intervals.iter() {
            while open.last().is_some_and(|&e| e <= *start) {
                open.pop();
            }
            if let Some(&outer) = open.last() {
                assert!(
                    *end <= outer,
                    "({start}, {end}) crosses its parent's end {outer}"
                );
            }
            open.push(*end);
        }
    }
    // The device's counters once: the 5 samples of pid 201, none of the processes' own.
    let counters: Vec<(&str, u64, f64)> = events
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["pid"].as_u64().unwrap(),
                e["ts"].as_f64().unwrap(),
            )
        })
        .collect();
    let utilization: Vec<f64> = counters
        .iter()
        .filter(|c| c.0 == "GPU 0 utilization (%)")
        .map(|c| c.2)
        .collect();
    assert_eq!(utilization.len(), 5, "{counters:?}");
    assert!(counters.iter().all(|c| c.1 == 0));
    assert_eq!(utilization[0], 2001.0e6);
    assert_eq!(counters.len(), 10, "utilization and memory, 5 samples each");

    // --run picks the other run; an unknown one is an error naming the runs.
    let other = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
        "--run".as_ref(),
        "a".as_ref(),
    ]);
    assert!(other.status.success(), "{other:?}");
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(merged["otherData"]["processes"], 3);
    let unknown = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
        "--run".as_ref(),
        "zzz".as_ref(),
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8(unknown.stderr).unwrap();
    assert!(
        stderr.contains("no run \"zzz\"") && stderr.contains("runs: a, b"),
        "{stderr}"
    );
}

/// A trace of process `pid` started at `started` with these `X` events (ts, dur) on thread 7.
fn trace_of(pid: u32, started: f64, spans: &[(f64, f64)]) -> TraceFile {
    TraceFile {
        trace_events: spans
            .iter()
            .map(|&(ts, dur)| event("X", "e", ts, Some(dur), pid, 7))
            .collect(),
        display_time_unit: "ms".into(),
        other_data: BTreeMap::from([(
            TraceFile::STARTED_UNIX.to_owned(),
            TraceArg::Number(started),
        )]),
    }
}

fn one_process(dir: &Path, pid: u32, trace: &TraceFile) {
    let p = Process {
        pid,
        role: Role::EngineCore,
        rank: None,
        run: "r",
        parent: 1,
        started: 1.7e9,
        steps: 1,
        avg_ms: 1.0,
        layer_ms: None,
    };
    write(dir, format::summary_file_name(pid), &summary(&p));
    write(dir, format::trace_file_name(pid), trace);
}

fn merged_x(dir: &Path) -> (Vec<(f64, f64, bool)>, String) {
    let out_file = dir.join("merged.json");
    let out = cli(&[
        "trace".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let x = merged["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            let ts = e["ts"].as_f64().unwrap();
            (
                ts,
                ts + e["dur"].as_f64().unwrap(),
                e["args"]["clipped"] == 1,
            )
        })
        .collect();
    (x, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn moving_to_the_unix_clock_keeps_events_nested_and_hostile_events_are_made_to_nest() {
    let tmp = tempfile::tempdir().unwrap();
    // A span that ends when its step ends, both at fractions of a microsecond (what the
    // hostile review saw end 0.2 µs after its step); one that crosses its parent's end; one
    // with a negative duration, one of another pid.
    let mut trace = trace_of(
        100,
        1_700_000_000.123_456,
        &[
            (1000.002, 500.0),
            (1000.126, 499.876),
            (1200.0, 900.0),
            (1300.0, -3.0),
        ],
    );
    trace
        .trace_events
        .push(event("X", "other", 1100.0, Some(1.0), 999, 7));
    one_process(tmp.path(), 100, &trace);
    let (x, stderr) = merged_x(tmp.path());
    assert!(
        stderr.contains("pid 100: 2 event(s) without a time or a duration left out"),
        "{stderr}"
    );
    assert_eq!(x.len(), 3, "{x:?}");
    let (step, inner, crossing) = (x[0], x[1], x[2]);
    assert!(inner.0 >= step.0 && inner.1 <= step.1, "{x:?}");
    assert!(
        crossing.1 <= step.1 && crossing.2,
        "cut at its parent's end: {x:?}"
    );
    assert!(!inner.2 && !step.2);
}

#[test]
fn trace_refuses_to_write_over_the_runs_files_and_says_why_nothing_could_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    one_process(tmp.path(), 100, &trace_of(100, 1.7e9, &[(0.0, 1.0)]));
    let target = tmp.path().join(format::trace_file_name(100));
    let before = std::fs::read(&target).unwrap();
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("would replace one of the run's own files"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), before);

    std::fs::write(&target, b"{not json").unwrap();
    let out_file = tmp.path().join("run.json");
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("no trace of run r could be read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pid 100 left out:") && stderr.contains("is not a report"),
        "{stderr}"
    );
    assert!(!out_file.exists());
}

#[test]
fn two_devices_of_one_index_are_two_tracks_and_a_device_without_uuid_is_not_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    for (pid, uuid) in [(100, Some("GPU-A")), (101, Some("GPU-B")), (102, None)] {
        one_process(tmp.path(), pid, &trace_of(pid, 1.7e9, &[(0.0, 1.0)]));
        let mut h = history(pid, 2 + pid as usize - 100, 1.7e9);
        h.devices[0].uuid = uuid.map(str::to_owned);
        if uuid.is_none() {
            h.devices.clear(); // a process that saw its device without a UUID
        }
        write(tmp.path(), format::gpu_history_file_name(pid), &h);
    }
    let out_file = tmp.path().join("merged.json");
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let mut tracks: BTreeMap<String, usize> = BTreeMap::new();
    for e in merged["traceEvents"].as_array().unwrap() {
        if e["ph"] == "C" && e["name"].as_str().unwrap().contains("utilization") {
            *tracks
                .entry(e["name"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        tracks,
        BTreeMap::from([
            ("GPU 0 GPU-A utilization (%)".to_owned(), 2),
            ("GPU 0 GPU-B utilization (%)".to_owned(), 3),
        ])
    );
}

#[test]
fn a_gpu_history_that_cannot_be_read_costs_its_figures_not_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    two_runs(tmp.path());
    std::fs::write(
        tmp.path().join(format::gpu_history_file_name(201)),
        b"{not json",
    )
    .unwrap();
    let out = cli(&["report".as_ref(), tmp.path().as_os_str(), "--json".as_ref()]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("pid 201: GPU figures left out:"),
        "{stderr}"
    );
    let report: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    // The device from the other process that saw it.
    let gpus: Vec<(u32, usize)> = report.runs[1]
        .gpus
        .iter()
        .map(|g| (g.pid, g.samples))
        .collect();
    assert_eq!(gpus, [(200, 2)]);
}
