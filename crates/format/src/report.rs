//! What the CLI prints with `--json`: `vllm-profiler report` and `vllm-profiler compare`.

use serde::{Deserialize, Serialize};

use crate::summary::{LayerPerformance, PerformanceSummary};

/// `vllm-profiler report DIR --json`: what the report's tables show, per process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub dir: String,
    pub processes: Vec<ProcessReport>,
}

/// One process's part of a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub summary: PerformanceSummary,
    /// The layers with the most total time, most first.
    pub top_layers: Vec<NamedLayer>,
    /// Per sampled device, over the kept samples.
    pub gpus: Vec<DeviceStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedLayer {
    pub name: String,
    #[serde(flatten)]
    pub performance: LayerPerformance,
}

/// Min, mean and max of one figure over a device's kept samples; `None` when no sample had it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStats {
    pub device_id: u32,
    pub name: Option<String>,
    pub samples: usize,
    pub gpu_utilization: Option<Spread>,
    pub memory_used_mb: Option<Spread>,
    pub temperature: Option<Spread>,
    pub power_draw: Option<Spread>,
}

/// `vllm-profiler compare A B --json`: the change of each figure from run A to run B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The process compared in each run (the one with the most steps).
    pub pid_a: u32,
    pub pid_b: u32,
    /// Percent past which a worse figure is a regression.
    pub threshold_percent: f64,
    pub metrics: Vec<Change>,
    pub layers: Vec<Change>,
    /// Layers in only one of the runs.
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub regressions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// (b - a) / a in percent; `None` when either is missing or a is 0.
    pub change_percent: Option<f64>,
    /// Whether a larger figure is better (tokens per second) rather than worse (durations).
    pub higher_is_better: bool,
    pub regression: bool,
}
