//! What the CLI prints with `--json`: `vllm-profiler report` and `vllm-profiler compare`.

use serde::{Deserialize, Serialize};

use crate::summary::{LayerPerformance, PerformanceSummary};

/// `vllm-profiler report DIR --json`: what the report's tables show, by server run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub dir: String,
    /// The runs in the dir, the earliest first.
    pub runs: Vec<RunGroup>,
}

/// The processes of one server run: those with one run id, and those a process of the run
/// started (by their parent pid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunGroup {
    /// The run id its processes carry (`pid-<pid>` for a run of processes that carry none).
    pub run_id: String,
    /// By role (API server, engine core, workers by rank, others), then pid.
    pub processes: Vec<ProcessReport>,
    /// Each device once, over the kept samples of the process that sampled it most.
    pub gpus: Vec<DeviceStats>,
}

/// One process's part of a [`RunGroup`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    /// Its role as the tables show it: `engine_core`, `worker rank 0`.
    pub label: String,
    pub summary: PerformanceSummary,
    /// The layers with the most total time, most first.
    pub top_layers: Vec<NamedLayer>,
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
    #[serde(default)]
    pub uuid: Option<String>,
    /// The process whose samples these are.
    #[serde(default)]
    pub pid: u32,
    pub samples: usize,
    pub gpu_utilization: Option<Spread>,
    pub memory_used_mb: Option<Spread>,
    pub temperature: Option<Spread>,
    pub power_draw: Option<Spread>,
}

/// `vllm-profiler compare A B --json`: the change of each figure from run A to run B, role by
/// role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The run compared on each side (of a dir with several, the latest).
    pub run_a: String,
    pub run_b: String,
    /// Percent past which a worse figure is a regression.
    pub threshold_percent: f64,
    /// Each role both runs have (`engine_core`, `worker rank 0`), in role order.
    pub roles: Vec<RoleComparison>,
    /// Roles only one run has.
    pub roles_only_in_a: Vec<String>,
    pub roles_only_in_b: Vec<String>,
    /// Over every role.
    pub regressions: usize,
}

/// One role's part of a [`Comparison`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleComparison {
    pub role: String,
    /// The process of that role on each side (of several, the one with the most steps).
    pub pid_a: u32,
    pub pid_b: u32,
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
