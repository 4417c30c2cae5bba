//! The Prometheus endpoint (`VLLM_PROFILING_PROMETHEUS_ADDR=host:port`): `GET /metrics` in the
//! OpenMetrics text format, encoded by `prometheus-client` from a snapshot taken at each
//! scrape, served by the bounded server of `http` on the agent's `vprof-metrics` thread.
//!
//! Series (per device where that applies, labelled `device`, `uuid`, `name`):
//! `vllm_profiler_gpu_utilization_percent`, `vllm_profiler_gpu_memory_used_bytes`,
//! `vllm_profiler_gpu_memory_total_bytes`, `vllm_profiler_gpu_temperature_celsius`,
//! `vllm_profiler_gpu_power_watts`; `vllm_profiler_step_duration_seconds` (histogram),
//! `vllm_profiler_steps_total`, `vllm_profiler_tokens_total` and `vllm_profiler_dropped_total`
//! (labelled `what`: `steps`, `samples`, `events`).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use vllm_profiler_core::{MetricsSnapshot, Session};

use crate::http;
use crate::warnings;

/// Upper bounds of the step-duration histogram, seconds: 1 ms to 30 s.
pub(crate) const STEP_BUCKETS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const MIB: f64 = vllm_profiler_format::BYTES_PER_MIB as f64;

/// The OpenMetrics text of `snapshot`.
pub(crate) fn render(snapshot: &MetricsSnapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snapshot.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

#[derive(Debug)]
struct Scrape(MetricsSnapshot);

type Labels = Vec<(&'static str, String)>;

impl Scrape {
    fn device_labels(&self, device_id: u32) -> Labels {
        let device = self.0.devices.iter().find(|d| d.index == device_id);
        let mut labels = vec![("device", device_id.to_string())];
        if let Some(uuid) = device.and_then(|d| d.uuid.clone()) {
            labels.push(("uuid", uuid));
        }
        if let Some(name) = device.and_then(|d| d.name.clone()) {
            labels.push(("name", name));
        }
        labels
    }

    /// One gauge family over the devices that have a value for it.
    fn gauge(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Unit,
        value: impl Fn(&vllm_profiler_format::GpuSample) -> Option<f64>,
    ) -> std::fmt::Result {
        let samples: Vec<_> = self
            .0
            .latest_samples
            .iter()
            .filter_map(|s| Some((s.device_id, value(s)?)))
            .collect();
        if samples.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(name, help, Some(&unit), MetricType::Gauge)?;
        for (device_id, value) in samples {
            let labels = self.device_labels(device_id);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let percent = || Unit::Other("percent".to_owned());
        self.gauge(
            &mut encoder,
            "vllm_profiler_gpu_utilization",
            "Percent of time a kernel ran on the GPU, at the newest sample.",
            percent(),
            |g| g.gpu_utilization,
        )?;
        self.gauge(
            &mut encoder,
            "vllm_profiler_gpu_memory_used",
            "GPU memory in use, all processes.",
            Unit::Bytes,
            |g| g.memory_used_mb.map(|mb| mb * MIB),
        )?;
        self.gauge(
            &mut encoder,
            "vllm_profiler_gpu_memory_total",
            "GPU memory in all.",
            Unit::Bytes,
            |g| g.memory_total_mb.map(|mb| mb * MIB),
        )?;
        self.gauge(
            &mut encoder,
            "vllm_profiler_gpu_temperature",
            "GPU temperature.",
            Unit::Celsius,
            |g| g.temperature,
        )?;
        self.gauge(
            &mut encoder,
            "vllm_profiler_gpu_power",
            "GPU power draw.",
            Unit::Other("watts".to_owned()),
            |g| g.power_draw,
        )?;

        let mut buckets: Vec<(f64, u64)> = STEP_BUCKETS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(s.step_buckets.iter().copied())
            .collect();
        buckets.truncate(STEP_BUCKETS_S.len() + 1);
        let histogram = encoder.encode_descriptor(
            "vllm_profiler_step_duration",
            "Duration of the inference steps recorded in this process.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        {
            let mut histogram = histogram;
            histogram.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.step_seconds_sum,
                s.total_steps,
                &buckets,
                None,
            )?;
        }

        let steps = ConstCounter::new(s.total_steps);
        steps.encode(encoder.encode_descriptor(
            "vllm_profiler_steps",
            "Inference steps recorded.",
            None,
            steps.metric_type(),
        )?)?;
        let tokens = ConstCounter::new(s.total_tokens);
        tokens.encode(encoder.encode_descriptor(
            "vllm_profiler_tokens",
            "Tokens of the recorded steps.",
            None,
            tokens.metric_type(),
        )?)?;
        let mut dropped = encoder.encode_descriptor(
            "vllm_profiler_dropped",
            "Records not kept: steps evicted from the bounded history (still in the totals), \
             samples evicted from theirs, events lost to a full buffer (missing from the totals).",
            None,
            MetricType::Counter,
        )?;
        for (what, count) in [
            ("steps", s.dropped_steps),
            ("samples", s.dropped_samples),
            ("events", s.lost_events),
        ] {
            let labels: Labels = vec![("what", what.to_owned())];
            ConstCounter::new(count).encode(dropped.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// How long a new server keeps trying a port in use when this process served metrics before:
/// after a disable and an enable, the old server may hold the port for one more poll.
const BIND_RETRY: Duration = Duration::from_millis(50);
const BIND_TRIES: u32 = 20;

/// Whether a server of this process has bound its port before.
static SERVED_HERE: AtomicBool = AtomicBool::new(false);

/// Binds `addr` and serves `/metrics` from `session` on a `vprof-metrics` thread until `stop`
/// disconnects. `Err` says why it cannot: a port in use is reported at once, unless this
/// process's own previous server may still hold it, which is waited for up to a second.
pub(crate) fn serve(addr: &str, session: Arc<Session>, stop: Receiver<()>) -> Result<(), String> {
    let describe =
        |err: &dyn std::fmt::Display| format!("cannot serve Prometheus metrics on {addr}: {err}");
    let first = match TcpListener::bind(addr) {
        Ok(listener) => Some(listener),
        Err(err)
            if SERVED_HERE.load(Ordering::Acquire) && err.kind() == io::ErrorKind::AddrInUse =>
        {
            None
        }
        Err(err) => return Err(describe(&err)),
    };
    let addr = addr.to_owned();
    let builder = std::thread::Builder::new().name("vprof-metrics".to_owned());
    let spawned = crate::quiet_threads::spawn(builder, move || {
        let listener = match first {
            Some(listener) => listener,
            None => match bind_when_free(&addr, &stop) {
                Some(listener) => listener,
                None => return,
            },
        };
        SERVED_HERE.store(true, Ordering::Release);
        let handle = |request: &http::Request| respond(request, &session);
        if let Err(err) = http::serve(listener, http::Limits::DEFAULT, &stop, &handle) {
            warnings::print_warnings(&[format!(
                "stopped serving Prometheus metrics on {addr}: {err}"
            )]);
        }
    });
    spawned
        .map(drop)
        .map_err(|err| format!("cannot start the metrics thread: {err}"))
}

/// Retries a port held by this process's previous server; one stderr line if it stays taken.
fn bind_when_free(addr: &str, stop: &Receiver<()>) -> Option<TcpListener> {
    let mut last_error = String::new();
    for _ in 0..BIND_TRIES {
        if !matches!(
            stop.recv_timeout(BIND_RETRY),
            Err(RecvTimeoutError::Timeout)
        ) {
            return None;
        }
        match TcpListener::bind(addr) {
            Ok(listener) => return Some(listener),
            Err(err) => last_error = err.to_string(),
        }
    }
    warnings::print_warnings(&[format!(
        "cannot serve Prometheus metrics on {addr}: {last_error}"
    )]);
    None
}

fn respond(request: &http::Request, session: &Session) -> http::Response {
    if request.path != "/metrics" {
        return http::Response::text(404, "only /metrics is served\n");
    }
    if request.method != "GET" && request.method != "HEAD" {
        return http::Response::text(405, "GET /metrics\n");
    }
    match session.metrics_snapshot(&STEP_BUCKETS_S) {
        Ok(snapshot) => http::Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: render(&snapshot).into_bytes(),
        },
        Err(err) => http::Response::text(503, &format!("{err}\n")),
    }
}

#[cfg(test)]
mod tests {
    use vllm_profiler_format::{GpuDevice, GpuSample};

    use super::*;

    #[test]
    fn renders_every_series_with_exact_values() {
        let snapshot = MetricsSnapshot {
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
                ..GpuSample::default()
            }],
        };
        let text = render(&snapshot);
        let labels = r#"{device="0",uuid="GPU-1",name="Fake GPU"}"#;
        for line in [
            format!("vllm_profiler_gpu_utilization_percent{labels} 42.0"),
            format!("vllm_profiler_gpu_memory_used_bytes{labels} 536870912.0"),
            format!("vllm_profiler_gpu_memory_total_bytes{labels} 1073741824.0"),
            format!("vllm_profiler_gpu_temperature_celsius{labels} 61.0"),
            "vllm_profiler_step_duration_seconds_sum 0.75".to_owned(),
            "vllm_profiler_step_duration_seconds_count 5".to_owned(),
            r#"vllm_profiler_step_duration_seconds_bucket{le="0.025"} 0"#.to_owned(),
            r#"vllm_profiler_step_duration_seconds_bucket{le="0.05"} 3"#.to_owned(),
            r#"vllm_profiler_step_duration_seconds_bucket{le="0.25"} 5"#.to_owned(),
            r#"vllm_profiler_step_duration_seconds_bucket{le="+Inf"} 5"#.to_owned(),
            "vllm_profiler_steps_total 5".to_owned(),
            "vllm_profiler_tokens_total 50".to_owned(),
            r#"vllm_profiler_dropped_total{what="events"} 3"#.to_owned(),
            "# EOF".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        // No power figure: no power series at all, rather than a made-up 0.
        assert!(!text.contains("vllm_profiler_gpu_power"), "{text}");
    }
}
