//! `gpu_history_<pid>.json` and the GPU list: devices, their samples, and the host's.

use serde::{Deserialize, Serialize};

use crate::summary::{ExportStamp, Role};

/// `gpu_history_<pid>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuHistory {
    pub schema_version: u32,
    pub pid: u32,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub rank: Option<u32>,
    /// Name of the detector that answered (seed 001), for example `CPUDetector`.
    pub detector: String,
    pub sample_interval_s: f64,
    /// The sampled devices, as the detector found them.
    #[serde(default)]
    pub devices: Vec<GpuDevice>,
    /// seed 004: one entry per device per sample.
    pub gpu_history: Vec<GpuSample>,
    /// Host-side samples taken at the same ticks: process CPU, RSS and host memory.
    pub host_history: Vec<HostSample>,
    pub dropped_samples: u64,
    /// The export that wrote this file: the reports of one export (`performance_summary`,
    /// `detailed_steps`, `gpu_history`, and `trace`'s `otherData`) carry the same stamp, so a
    /// reader can tell a whole set from one that mixes two exports (after a kill or a full
    /// disk). Absent from a summary asked for through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStamp>,
}

/// One device at one instant. A metric the device cannot give is `null`, never a made-up 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// seed 004: Unix seconds.
    pub timestamp: f64,
    pub device_id: u32,
    /// seed 004: percent of time a kernel was running.
    pub gpu_utilization: Option<f64>,
    /// seed 004: percent of memory capacity in use.
    pub memory_utilization: Option<f64>,
    /// seed 004: degrees Celsius.
    pub temperature: Option<f64>,
    /// seed 004: watts.
    pub power_draw: Option<f64>,
    /// MiB (2^20 bytes), as seed 001 counts them.
    pub memory_used_mb: Option<f64>,
    pub memory_total_mb: Option<f64>,
    #[serde(default)]
    pub memory_free_mb: Option<f64>,
    /// Percent of time the memory controller was busy (NVML's "memory" utilization, AMD's UMC
    /// activity). Not the same as `memory_utilization`.
    #[serde(default)]
    pub memory_controller_utilization: Option<f64>,
    /// Watts.
    #[serde(default)]
    pub power_limit: Option<f64>,
    #[serde(default)]
    pub sm_clock_mhz: Option<f64>,
    #[serde(default)]
    pub memory_clock_mhz: Option<f64>,
    /// GPU memory used by the profiled process on this device, MiB.
    #[serde(default)]
    pub process_memory_used_mb: Option<f64>,
}

/// One process's memory on a device, as the vendor library lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessMemory {
    pub pid: u32,
    /// MiB; `None` where the library hides per-process memory (MIG, vGPU).
    pub used_memory_mb: Option<f64>,
}

/// A device as the detector found it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The index the vendor library gives it (NVML's, amd-smi's enumeration order).
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// `nvidia`, `amd` or `cpu`, as in seed 001.
    pub gpu_type: String,
    pub memory_total_mb: Option<f64>,
}

/// Detector name reported when no GPU backend answered (seed 001's last fallback), in
/// `GpuHistory::detector` and `GpuList::detector`.
pub const CPU_DETECTOR: &str = "CPUDetector";

/// Seed 001's GPU list (`GET /api/management/gpus`), printed by `vllm-profiler gpus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuList {
    pub gpus: Vec<GpuListEntry>,
    pub total: usize,
    /// `AMDSMIDetector`, `NVMLDetector` or `CPUDetector`.
    pub detector: String,
}

/// One entry of seed 001's GPU list. Memory in whole MiB, as the seed's `// (1024 * 1024)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuListEntry {
    pub index: u32,
    pub name: String,
    pub gpu_type: String,
    pub total_memory_mb: Option<u64>,
    pub used_memory_mb: Option<u64>,
    pub free_memory_mb: Option<u64>,
    /// `null` where it cannot be read (seed 001's torch fallbacks).
    pub utilization_percent: Option<f64>,
}

/// The host at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub timestamp: f64,
    /// CPU time of this process over the last interval, in percent of one core (can pass 100).
    pub process_cpu_percent: Option<f64>,
    pub process_rss_mb: Option<f64>,
    pub host_memory_used_mb: Option<f64>,
    pub host_memory_total_mb: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_metric_serialises_as_null_not_zero() {
        let sample = GpuSample {
            timestamp: 1.5,
            device_id: 0,
            gpu_utilization: Some(80.0),
            ..GpuSample::default()
        };
        let json: serde_json::Value = serde_json::to_value(&sample).unwrap();
        assert_eq!(json["gpu_utilization"], 80.0);
        assert!(json["temperature"].is_null());
        assert!(json["power_draw"].is_null());
    }
}
