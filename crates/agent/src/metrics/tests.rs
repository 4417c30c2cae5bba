use vllm_profiler_format::{GpuDevice, GpuSample, MetricsSnapshot, Role};

use super::exposition::Format;
use super::*;

fn snapshot(pid: u32, role: Role, rank: Option<u32>) -> MetricsSnapshot {
    MetricsSnapshot {
        pid,
        role,
        rank,
        total_steps: 5,
        total_tokens: 50,
        step_seconds_sum: 0.75,
        step_buckets: {
            let mut b = vec![0; STEP_BUCKETS_S.len() + 1];
            b[5] = 3; // <= 50 ms
            b[7] = 2; // <= 250 ms
            b
        },
        dropped_steps: 1,
        dropped_samples: 2,
        lost_events: 3,
        devices: vec![GpuDevice {
            index: 0,
            name: Some("Fake GPU".into()),
            uuid: Some("GPU-1".into()),
            gpu_type: "nvidia".into(),
            memory_total_mb: Some(1024.0),
        }],
        latest_samples: vec![GpuSample {
            device_id: 0,
            gpu_utilization: Some(42.0),
            memory_used_mb: Some(512.0),
            memory_total_mb: Some(1024.0),
            temperature: Some(61.0),
            power_draw: None,
            power_limit: Some(300.0),
            sm_clock_mhz: Some(1410.0),
            memory_controller_utilization: Some(7.0),
            process_memory_used_mb: Some(256.0),
            sm_active_percent: Some(63.5),
            dram_bandwidth_percent: Some(81.25),
            ..GpuSample::default()
        }],
    }
}

#[test]
fn renders_every_series_with_exact_values() {
    let text = render(&snapshot(41, Role::Worker, Some(2)), Format::OpenMetrics);
    let process = r#"pid="41",role="worker",rank="2""#;
    let device = format!(r#"gpu="0",UUID="GPU-1",model_name="Fake GPU",Hostname="host",{process}"#);
    for line in [
        format!("vllm_profiler_gpu_utilization_percent{{{device}}} 42.0"),
        format!("vllm_profiler_gpu_memory_controller_utilization_percent{{{device}}} 7.0"),
        format!("vllm_profiler_gpu_memory_used_bytes{{{device}}} 536870912.0"),
        format!("vllm_profiler_gpu_memory_total_bytes{{{device}}} 1073741824.0"),
        format!("vllm_profiler_gpu_temperature_celsius{{{device}}} 61.0"),
        format!("vllm_profiler_gpu_power_limit_watts{{{device}}} 300.0"),
        format!("vllm_profiler_gpu_sm_clock_hertz{{{device}}} 1410000000.0"),
        format!("vllm_profiler_process_gpu_memory_used_bytes{{{device}}} 268435456.0"),
        format!("vllm_profiler_gpu_sm_active_percent{{{device}}} 63.5"),
        format!("vllm_profiler_gpu_dram_bandwidth_percent{{{device}}} 81.25"),
        "# UNIT vllm_profiler_gpu_sm_active_percent percent".to_owned(),
        format!("vllm_profiler_step_duration_seconds_sum{{{process}}} 0.75"),
        format!("vllm_profiler_step_duration_seconds_count{{{process}}} 5"),
        format!(r#"vllm_profiler_step_duration_seconds_bucket{{{process},le="0.025"}} 0"#),
        format!(r#"vllm_profiler_step_duration_seconds_bucket{{{process},le="0.05"}} 3"#),
        format!(r#"vllm_profiler_step_duration_seconds_bucket{{{process},le="0.25"}} 5"#),
        format!(r#"vllm_profiler_step_duration_seconds_bucket{{{process},le="+Inf"}} 5"#),
        format!("vllm_profiler_steps_total{{{process}}} 5"),
        format!("vllm_profiler_tokens_total{{{process}}} 50"),
        format!(r#"vllm_profiler_dropped_total{{{process},what="events"}} 3"#),
        "# HELP vllm_profiler_steps Inference steps recorded.".to_owned(),
        "# UNIT vllm_profiler_gpu_power_limit_watts watts".to_owned(),
        "# EOF".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    // No power or memory-clock figure: no series at all, rather than a made-up 0.
    assert!(!text.contains("vllm_profiler_gpu_power_watts"), "{text}");
    assert!(!text.contains("memory_clock"), "{text}");
    // A device without tensor or occupancy figures (no GPM, or not those): no series either.
    assert!(!text.contains("tensor_active"), "{text}");
    assert!(!text.contains("sm_occupancy"), "{text}");
}

#[test]
fn the_classic_text_names_counters_with_total_in_help_and_type() {
    let text = render(&snapshot(41, Role::EngineCore, None), Format::Classic);
    for line in [
        "# HELP vllm_profiler_steps_total Inference steps recorded.",
        "# TYPE vllm_profiler_steps_total counter",
        r#"vllm_profiler_steps_total{pid="41",role="engine_core"} 5"#,
        "# TYPE vllm_profiler_step_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    assert!(
        !text.contains("# UNIT") && !text.contains("# EOF"),
        "{text}"
    );
}

#[test]
fn each_device_is_served_once_and_each_process_has_its_own_series() {
    let server = snapshot(10, Role::ApiServer, None);
    let mut engine = snapshot(11, Role::EngineCore, None);
    engine.total_steps = 9;
    engine.latest_samples[0].gpu_utilization = Some(99.0);
    // A device only the engine sees, without a UUID: known by its index.
    engine.devices.push(GpuDevice {
        index: 1,
        ..GpuDevice::default()
    });
    engine.latest_samples.push(GpuSample {
        device_id: 1,
        gpu_utilization: Some(5.0),
        ..GpuSample::default()
    });
    let families = series::families(&[server, engine], "node-1");
    let text = exposition::encode(&families, Format::Classic);
    let utilization: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vllm_profiler_gpu_utilization_percent{"))
        .collect();
    assert_eq!(
        utilization,
        [
            r#"vllm_profiler_gpu_utilization_percent{gpu="0",UUID="GPU-1",model_name="Fake GPU",Hostname="node-1",pid="10",role="api_server"} 42.0"#,
            r#"vllm_profiler_gpu_utilization_percent{gpu="1",Hostname="node-1",pid="11",role="engine_core"} 5.0"#,
        ]
    );
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vllm_profiler_steps_total{"))
        .collect();
    assert_eq!(
        steps,
        [
            r#"vllm_profiler_steps_total{pid="10",role="api_server"} 5"#,
            r#"vllm_profiler_steps_total{pid="11",role="engine_core"} 9"#,
        ]
    );
    let process_memory = text
        .lines()
        .filter(|l| l.starts_with("vllm_profiler_process_gpu_memory_used_bytes{"))
        .count();
    assert_eq!(process_memory, 2, "{text}");
}

#[test]
fn hostile_figures_are_bounded_and_escaped() {
    let mut other = snapshot(12, Role::Worker, Some(0));
    other.devices[0].uuid = Some("GPU-2".into());
    other.devices[0].name = Some(format!("a\"b\n{}", "é".repeat(500)));
    other.step_buckets = vec![1, 2, 3]; // not the endpoint's bounds: no histogram
    let families = series::families(&[other], "h");
    let text = exposition::encode(&families, Format::OpenMetrics);
    let line = text
        .lines()
        .find(|l| l.starts_with("vllm_profiler_gpu_utilization_percent{"))
        .unwrap();
    assert!(line.contains(r#"model_name="a\"b\néé"#), "{line}");
    assert!(line.len() < 300, "{line}");
    assert!(
        !text.contains("vllm_profiler_step_duration_seconds_bucket"),
        "{text}"
    );
}
