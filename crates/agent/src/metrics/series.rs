//! The series the endpoint serves, from the snapshots of the host's profiled processes.
//!
//! Every series carries the `pid` and `role` of the process whose figures it holds, and a
//! worker's `rank`. Device series carry dcgm-exporter's device labels `gpu`, `UUID` and
//! `Hostname`, so that they join with DCGM's series `on(UUID)`, and the model as `model_name`:
//! dcgm's `modelName` is the one name `promtool check metrics` refuses (camelCase), and the
//! shipped scrape configs rename it to `modelName` as Prometheus takes it in. Each device is
//! served once, from the first snapshot that has a sample of it (the serving process's own
//! first), so the join has one series per device. Per-process GPU memory is served per
//! process and device.

use vllm_profiler_format::{GpuSample, MetricsSnapshot, BYTES_PER_MIB};

use super::exposition::{Family, Kind, Labels, Sample, Value};

/// Upper bounds of the step-duration histogram, seconds: 1 ms to 30 s.
pub(crate) const STEP_BUCKETS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Label values longer than this (bytes) are cut: a device name from another process's file
/// is not trusted to be short.
const MAX_LABEL_BYTES: usize = 128;

const MIB: f64 = BYTES_PER_MIB as f64;

/// A device gauge: its family and how a sample gives its value.
struct DeviceGauge {
    name: &'static str,
    help: &'static str,
    unit: &'static str,
    value: fn(&GpuSample) -> Option<f64>,
}

const DEVICE_GAUGES: [DeviceGauge; 13] = [
    DeviceGauge {
        name: "vllm_profiler_gpu_utilization_percent",
        help: "Percent of time a kernel ran on the GPU, at the newest sample.",
        unit: "percent",
        value: |g| g.gpu_utilization,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_memory_controller_utilization_percent",
        help: "Percent of time the memory controller was busy, at the newest sample.",
        unit: "percent",
        value: |g| g.memory_controller_utilization,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_memory_used_bytes",
        help: "GPU memory in use, all processes.",
        unit: "bytes",
        value: |g| g.memory_used_mb.map(|mb| mb * MIB),
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_memory_total_bytes",
        help: "GPU memory in all.",
        unit: "bytes",
        value: |g| g.memory_total_mb.map(|mb| mb * MIB),
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_temperature_celsius",
        help: "GPU temperature.",
        unit: "celsius",
        value: |g| g.temperature,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_power_watts",
        help: "GPU power draw.",
        unit: "watts",
        value: |g| g.power_draw,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_power_limit_watts",
        help: "GPU power limit.",
        unit: "watts",
        value: |g| g.power_limit,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_sm_clock_hertz",
        help: "GPU SM clock.",
        unit: "hertz",
        value: |g| g.sm_clock_mhz.map(|mhz| mhz * 1e6),
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_memory_clock_hertz",
        help: "GPU memory clock.",
        unit: "hertz",
        value: |g| g.memory_clock_mhz.map(|mhz| mhz * 1e6),
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_sm_active_percent",
        help: "GPM: percent of time a warp was active, averaged over the SMs, over the last \
               sample interval (DCGM's SM activity).",
        unit: "percent",
        value: |g| g.sm_active_percent,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_sm_occupancy_percent",
        help: "GPM: resident warps in percent of the SMs' maximum, over the last sample interval.",
        unit: "percent",
        value: |g| g.sm_occupancy_percent,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_tensor_active_percent",
        help: "GPM: percent of time a tensor-core pipe was active, over the last sample interval.",
        unit: "percent",
        value: |g| g.tensor_active_percent,
    },
    DeviceGauge {
        name: "vllm_profiler_gpu_dram_bandwidth_percent",
        help: "GPM: DRAM bandwidth used, in percent of the peak, over the last sample interval.",
        unit: "percent",
        value: |g| g.dram_bandwidth_percent,
    },
];

/// Cuts `text` to [`MAX_LABEL_BYTES`] at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_LABEL_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn process_labels(snapshot: &MetricsSnapshot) -> Labels {
    let mut labels = vec![
        ("pid", snapshot.pid.to_string()),
        ("role", snapshot.role.as_str().to_owned()),
    ];
    if let Some(rank) = snapshot.rank {
        labels.push(("rank", rank.to_string()));
    }
    labels
}

/// dcgm-exporter's labels of a device, then the process's.
fn device_labels(snapshot: &MetricsSnapshot, device_id: u32, hostname: &str) -> Labels {
    let device = snapshot.devices.iter().find(|d| d.index == device_id);
    let mut labels = vec![("gpu", device_id.to_string())];
    if let Some(uuid) = device.and_then(|d| d.uuid.as_deref()) {
        labels.push(("UUID", bounded(uuid)));
    }
    if let Some(name) = device.and_then(|d| d.name.as_deref()) {
        labels.push(("model_name", bounded(name)));
    }
    labels.push(("Hostname", bounded(hostname)));
    labels.extend(process_labels(snapshot));
    labels
}

/// Which device a sample is of, across processes: its UUID, or its index without one.
fn device_key(snapshot: &MetricsSnapshot, sample: &GpuSample) -> (Option<String>, u32) {
    let uuid = snapshot
        .devices
        .iter()
        .find(|d| d.index == sample.device_id)
        .and_then(|d| d.uuid.clone());
    match uuid {
        Some(uuid) => (Some(uuid), 0),
        None => (None, sample.device_id),
    }
}

fn sample(suffix: &'static str, labels: Labels, value: Value) -> Sample {
    Sample {
        suffix,
        labels,
        value,
    }
}

/// Every family, from `snapshots` (the serving process's first), for a host named `hostname`.
pub(crate) fn families(snapshots: &[MetricsSnapshot], hostname: &str) -> Vec<Family> {
    // Each device once: the first snapshot with a sample of it.
    let mut devices: Vec<(&MetricsSnapshot, &GpuSample)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for snapshot in snapshots {
        for gpu in &snapshot.latest_samples {
            if seen.insert(device_key(snapshot, gpu)) {
                devices.push((snapshot, gpu));
            }
        }
    }
    let mut families: Vec<Family> = DEVICE_GAUGES
        .iter()
        .map(|gauge| Family {
            name: gauge.name,
            help: gauge.help,
            unit: Some(gauge.unit),
            kind: Kind::Gauge,
            samples: devices
                .iter()
                .filter_map(|(snapshot, gpu)| {
                    let value = (gauge.value)(gpu)?;
                    let labels = device_labels(snapshot, gpu.device_id, hostname);
                    Some(sample("", labels, Value::Float(value)))
                })
                .collect(),
        })
        .collect();
    families.push(Family {
        name: "vllm_profiler_process_gpu_memory_used_bytes",
        help: "GPU memory this process holds on the device.",
        unit: Some("bytes"),
        kind: Kind::Gauge,
        samples: snapshots
            .iter()
            .flat_map(|snapshot| {
                snapshot.latest_samples.iter().filter_map(move |gpu| {
                    let mb = gpu.process_memory_used_mb?;
                    let labels = device_labels(snapshot, gpu.device_id, hostname);
                    Some(sample("", labels, Value::Float(mb * MIB)))
                })
            })
            .collect(),
    });
    families.push(step_histogram(snapshots));
    let counter = |name, help, value: fn(&MetricsSnapshot) -> u64| Family {
        name,
        help,
        unit: None,
        kind: Kind::Counter,
        samples: snapshots
            .iter()
            .map(|s| sample("_total", process_labels(s), Value::Count(value(s))))
            .collect(),
    };
    families.push(counter(
        "vllm_profiler_steps",
        "Inference steps recorded.",
        |s| s.total_steps,
    ));
    families.push(counter(
        "vllm_profiler_tokens",
        "Tokens of the recorded steps.",
        |s| s.total_tokens,
    ));
    let mut dropped = counter(
        "vllm_profiler_dropped",
        "Records not kept: steps evicted from the bounded history (still in the totals), \
         samples evicted from theirs, events lost to a full buffer (missing from the totals).",
        |_| 0,
    );
    dropped.samples = snapshots
        .iter()
        .flat_map(|s| {
            [
                ("steps", s.dropped_steps),
                ("samples", s.dropped_samples),
                ("events", s.lost_events),
            ]
            .map(|(what, count)| {
                let mut labels = process_labels(s);
                labels.push(("what", what.to_owned()));
                sample("_total", labels, Value::Count(count))
            })
        })
        .collect();
    families.push(dropped);
    families
}

/// The step durations of each process, in [`STEP_BUCKETS_S`] (cumulative, as both formats
/// want them). A snapshot whose buckets do not fit the bounds is left out.
fn step_histogram(snapshots: &[MetricsSnapshot]) -> Family {
    let mut samples = Vec::new();
    for snapshot in snapshots {
        if snapshot.step_buckets.len() != STEP_BUCKETS_S.len() + 1 {
            continue;
        }
        let labels = process_labels(snapshot);
        let mut cumulative = 0u64;
        let bounds = STEP_BUCKETS_S.iter().copied().chain([f64::INFINITY]);
        for (bound, count) in bounds.zip(&snapshot.step_buckets) {
            cumulative = cumulative.saturating_add(*count);
            let mut labels = labels.clone();
            labels.push(("le", super::exposition::number(bound)));
            samples.push(sample("_bucket", labels, Value::Count(cumulative)));
        }
        let sum = snapshot.step_seconds_sum;
        samples.push(sample("_sum", labels.clone(), Value::Float(sum)));
        // The count is the +Inf bucket, whatever the file said its total was.
        samples.push(sample("_count", labels, Value::Count(cumulative)));
    }
    Family {
        name: "vllm_profiler_step_duration_seconds",
        help: "Duration of the inference steps recorded in this process.",
        unit: Some("seconds"),
        kind: Kind::Histogram,
        samples,
    }
}
