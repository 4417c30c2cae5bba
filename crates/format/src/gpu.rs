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
    /// GPM (Hopper and newer, through NVML), over the interval since the device's previous
    /// sample: percent of time any warp was active, averaged over the SMs (DCGM's "SM
    /// activity"). Unlike `gpu_utilization`, one busy SM does not read 100.
    #[serde(default)]
    pub sm_active_percent: Option<f64>,
    /// GPM: resident warps as a percent of the SMs' maximum, averaged over the interval.
    #[serde(default)]
    pub sm_occupancy_percent: Option<f64>,
    /// GPM: percent of time any tensor core pipe was active.
    #[serde(default)]
    pub tensor_active_percent: Option<f64>,
    /// GPM: DRAM bandwidth used, in percent of the peak; high in a memory-bound decode.
    #[serde(default)]
    pub dram_bandwidth_percent: Option<f64>,
}

impl GpuSample {
    /// The sample's GPM figures; `None` when the device gave none of them.
    pub fn gpm(&self) -> Option<GpmFigures> {
        let figures = GpmFigures {
            sm_active_percent: self.sm_active_percent,
            sm_occupancy_percent: self.sm_occupancy_percent,
            tensor_active_percent: self.tensor_active_percent,
            dram_bandwidth_percent: self.dram_bandwidth_percent,
        };
        (figures != GpmFigures::default()).then_some(figures)
    }
}

/// The device whose figures steps carry, of one sample per device by device index: the
/// first one on which this process holds memory (a vLLM worker uses one GPU of several); else
/// `previous`, the one chosen the tick before, while its own memory is unknown (its process
/// list failed this time), so that steps never take another device's figures for a tick; else
/// the first.
pub fn primary_device<'a, S>(
    samples: impl IntoIterator<Item = &'a S> + Clone,
    previous: Option<u32>,
) -> Option<&'a S>
where
    S: std::borrow::Borrow<GpuSample> + 'a,
{
    let holding = |s: &&S| s.borrow().process_memory_used_mb.is_some_and(|mb| mb > 0.0);
    let kept = |s: &&S| {
        let s = s.borrow();
        Some(s.device_id) == previous && s.process_memory_used_mb.is_none()
    };
    (samples.clone().into_iter().find(holding))
        .or_else(|| samples.clone().into_iter().find(kept))
        .or_else(|| samples.into_iter().next())
}

/// A device's GPM figures at one instant, as [`GpuSample`] names them; each `null` where the
/// device does not give it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GpmFigures {
    pub sm_active_percent: Option<f64>,
    pub sm_occupancy_percent: Option<f64>,
    pub tensor_active_percent: Option<f64>,
    pub dram_bandwidth_percent: Option<f64>,
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

    fn gpu(device_id: u32, own_mb: Option<f64>) -> GpuSample {
        GpuSample {
            device_id,
            process_memory_used_mb: own_mb,
            ..GpuSample::default()
        }
    }

    #[test]
    fn primary_device_is_the_one_holding_this_process_memory() {
        let samples = [gpu(0, Some(0.0)), gpu(1, Some(512.0)), gpu(2, Some(64.0))];
        assert_eq!(primary_device(&samples, None).unwrap().device_id, 1);
        let none_held = [gpu(3, None), gpu(4, Some(0.0))];
        assert_eq!(primary_device(&none_held, None).unwrap().device_id, 3);
        assert!(primary_device(&[] as &[GpuSample], None).is_none());
        // The chosen device's process list failed (memory unknown): it stays chosen.
        let unknown = [gpu(0, Some(0.0)), gpu(1, None)];
        assert_eq!(primary_device(&unknown, Some(1)).unwrap().device_id, 1);
        // It answered 0: this process left it, and the first device is taken.
        let left = [gpu(0, Some(0.0)), gpu(1, Some(0.0))];
        assert_eq!(primary_device(&left, Some(1)).unwrap().device_id, 0);
    }

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
