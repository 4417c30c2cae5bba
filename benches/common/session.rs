//! A core session filled like a long-running profiled engine at the default history: kept
//! steps with a few nested spans each, and samples of one device plus the host.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use vllm_profiler_core::{Session, Settings, ThreadRecorder};
use vllm_profiler_format as format;

/// Layer names of the filler steps: two decoder layers, each with its attention inside.
pub const LAYERS: [&[u8]; 2] = [b"model.layers.0", b"model.layers.1"];
pub const INNER: &[u8] = b"self_attn";

/// A session (history `steps`, output to `dir`, no sampler thread) holding `steps` kept
/// steps of 4 spans each and `samples` samples of device 0 and of the host.
pub fn full_session(dir: &Path, steps: usize, samples: usize) -> Arc<Session> {
    let settings = Settings {
        output_dir: dir.to_path_buf(),
        max_history: steps.max(samples),
        gpu_monitoring: false,
        ..Settings::default()
    };
    let session = Session::new(std::process::id(), 1, settings);
    let mut recorder = session.register_thread(1);
    for i in 0..steps {
        record_step_with_spans(&mut recorder, i as u32);
        // 5 events a step: drain well before the ring (8192 events) fills.
        if i % 1000 == 999 {
            session.drain().expect("drain");
        }
    }
    session.drain().expect("drain");
    let start = vllm_profiler_format::unix_now();
    for i in 0..samples {
        let t = start + i as f64 * 0.1;
        session.record_samples(host_sample(t), &[gpu_sample(t, i)]);
    }
    let summary = session.summary(None).expect("summary");
    assert_eq!(summary.counters.lost_events, 0);
    assert_eq!(summary.counters.kept_steps as usize, steps);
    session
}

/// One step with two layers, each with one nested span: 5 events.
pub fn record_step_with_spans(recorder: &mut ThreadRecorder, i: u32) {
    let step = recorder.step_begin(8 + i % 8, 512).expect("step");
    for layer in LAYERS {
        let outer = recorder.span_begin(layer).expect("span");
        let inner = recorder.span_begin(INNER).expect("span");
        recorder.span_end(inner).expect("span end");
        recorder.span_end(outer).expect("span end");
    }
    recorder.step_end(step).expect("step end");
}

pub fn host_sample(t: f64) -> format::HostSample {
    format::HostSample {
        timestamp: t,
        process_cpu_percent: Some(97.5),
        process_rss_mb: Some(2048.25),
        host_memory_used_mb: Some(120_000.0),
        host_memory_total_mb: Some(515_000.0),
    }
}

pub fn gpu_sample(t: f64, i: usize) -> format::GpuSample {
    format::GpuSample {
        timestamp: t,
        device_id: 0,
        gpu_utilization: Some((i % 100) as f64),
        memory_utilization: Some(71.5),
        temperature: Some(64.0),
        power_draw: Some(312.4),
        memory_used_mb: Some(58_000.0),
        memory_total_mb: Some(81_559.0),
        memory_free_mb: Some(23_559.0),
        memory_controller_utilization: Some(40.0),
        power_limit: Some(700.0),
        sm_clock_mhz: Some(1980.0),
        memory_clock_mhz: Some(2619.0),
        process_memory_used_mb: Some(57_000.0),
        sm_active_percent: Some(62.0),
        sm_occupancy_percent: Some(31.5),
        tensor_active_percent: Some(18.0),
        dram_bandwidth_percent: Some(74.0),
    }
}
