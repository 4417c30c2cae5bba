//! The metrics of one process, as the host's one Prometheus endpoint serves them: what
//! `Session::metrics_snapshot` reads, and what each profiled process publishes in the runtime
//! dir (`<runtime dir>/prometheus-<addr>/<pid>.json`) for the process that serves the port.

use serde::{Deserialize, Serialize};

use crate::{GpuDevice, GpuSample, Role};

/// One process's figures at one moment: totals over every step, the step durations in buckets
/// (the bounds are the endpoint's), and the newest sample of each device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub pid: u32,
    #[serde(default)]
    pub role: Role,
    /// A worker's rank; `None` for other roles.
    #[serde(default)]
    pub rank: Option<u32>,
    pub total_steps: u64,
    pub total_tokens: u64,
    /// Sum of every step's duration, seconds.
    pub step_seconds_sum: f64,
    /// Steps per bucket (not cumulative), one per bound asked for, then one above the last.
    pub step_buckets: Vec<u64>,
    pub dropped_steps: u64,
    pub dropped_samples: u64,
    pub lost_events: u64,
    pub devices: Vec<GpuDevice>,
    /// The newest sample of each sampled device.
    pub latest_samples: Vec<GpuSample>,
}

/// `<pid>.json` in a metrics group of the runtime dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedMetrics {
    pub schema_version: u32,
    /// Unix seconds when the process wrote it.
    pub published_at: f64,
    pub snapshot: MetricsSnapshot,
}

impl PublishedMetrics {
    /// A published file longer than this is not read.
    pub const MAX_BYTES: u64 = 64 * 1024;
}
