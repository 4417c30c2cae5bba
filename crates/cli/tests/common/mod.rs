//! What the CLI's run tests share: the CLI, and report dirs written with the format crate's
//! types.
#![allow(dead_code)] // each test file uses its part

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use vllm_profiler_format::{
    self as format, Counters, GpuDevice, GpuHistory, GpuSample, LayerPerformance, MemorySource,
    PerformanceSummary, Role, TraceArg, TraceEvent, TraceFile,
};

pub fn cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vllm-profiler"))
        .args(args)
        .output()
        .expect("the CLI runs")
}

pub struct Process {
    pub pid: u32,
    pub role: Role,
    pub rank: Option<u32>,
    pub run: &'static str,
    pub parent: u32,
    pub started: f64,
    pub steps: u64,
    pub avg_ms: f64,
    pub layer_ms: Option<f64>,
}

pub fn summary(p: &Process) -> PerformanceSummary {
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
                        avg_gpu_duration_ms: None,
                        total_gpu_duration_ms: None,
                    },
                )])
            })
            .unwrap_or_default(),
        kernel_performance: None,
        torch_op_performance: None,
        torch_op_windows: None,
        counters: Counters::default(),
    }
}

pub fn write(dir: &Path, name: String, value: &impl serde::Serialize) {
    std::fs::write(dir.join(name), serde_json::to_vec(value).unwrap()).unwrap();
}

pub const UUID: &str = "GPU-0000aaaa";

/// A GPU history of `samples` samples of one device, starting at `at`.
pub fn history(pid: u32, samples: usize, at: f64) -> GpuHistory {
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

pub fn event(
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
pub fn trace(pid: u32, started: f64) -> TraceFile {
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
pub fn two_runs(dir: &Path) {
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

/// A trace of process `pid` started at `started` with these `X` events (ts, dur) on thread 7.
pub fn trace_of(pid: u32, started: f64, spans: &[(f64, f64)]) -> TraceFile {
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

pub fn one_process(dir: &Path, pid: u32, trace: &TraceFile) {
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

pub fn merged_x(dir: &Path) -> (Vec<(f64, f64, bool)>, String) {
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
