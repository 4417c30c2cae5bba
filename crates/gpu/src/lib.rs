//! GPU backends and seed 001's detector chain: amd-smi, then NVML, then the CPU; the backend
//! trait they implement, the host probe sampled beside them, and the per-host shared sampler.
//!
//! Unsafe code is denied here except in `amdsmi`, the one native loader written by hand; NVML
//! goes through `nvml-wrapper`'s safe API.
#![deny(unsafe_code)]

mod amdsmi;
mod backend;
pub mod cpu;
pub mod fork_closed;
mod health;
mod host;
pub mod nvml;
pub mod shared;

use std::path::PathBuf;

use vllm_profiler_format::{GpuList, GpuListEntry};

pub use amdsmi::{AmdSmiBackend, AMDSMI_DETECTOR};
pub use backend::{process_memory_mb, DeviceBackend, DeviceReading};
pub use cpu::{CpuProbe, CPU_DETECTOR};
pub use host::{HostProbe, HOST_MEMORY_REFRESH};
pub use nvml::{NvmlBackend, NVML_DETECTOR};
pub use shared::SharedBackend;

/// What detection is told: library paths and which devices to sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// NVML to load instead of `libnvidia-ml.so.1` / `libnvidia-ml.so`.
    pub nvml_library: Option<PathBuf>,
    /// amd-smi to load instead of `libamd_smi.so`.
    pub amdsmi_library: Option<PathBuf>,
    /// Device indices to sample; `None` = all.
    pub devices: Option<Vec<u32>>,
}

impl Options {
    /// The indices to open among `count` devices; an unknown index is reported and skipped.
    fn selected(&self, count: u32, library: &str, health: &mut health::Health) -> Vec<u32> {
        match &self.devices {
            None => (0..count).collect(),
            Some(wanted) => {
                let mut chosen = Vec::new();
                for &index in wanted {
                    if index >= count {
                        health.warn(format!(
                            "VLLM_PROFILING_DEVICES names device {index}, but {library} has \
                             {count} device(s): ignored"
                        ));
                    } else if !chosen.contains(&index) {
                        chosen.push(index);
                    }
                }
                chosen
            }
        }
    }
}

/// The outcome of the detector chain.
pub struct Detection {
    /// The GPU backend that answered; `None` when the CPU fallback did.
    pub backend: Option<Box<dyn DeviceBackend>>,
    /// Why each earlier detector did not answer, in chain order.
    pub skipped: Vec<String>,
    /// Problems the user asked for and should hear about: a library path they named that
    /// does not load, a device index that does not exist.
    pub warnings: Vec<String>,
}

impl Detection {
    pub fn detector_name(&self) -> &'static str {
        self.backend
            .as_ref()
            .map_or(CPU_DETECTOR, |b| b.detector_name())
    }
}

/// Seed 001's chain: the first of amd-smi and NVML that loads and has at least one device
/// answers; otherwise the CPU does. Loads libraries, so call it off the constructor.
pub fn detect(options: &Options) -> Detection {
    let mut detection = Detection {
        backend: None,
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    let amd = AmdSmiBackend::open(options);
    if let Some(backend) = accept(
        &mut detection,
        "amd-smi",
        amd,
        options.amdsmi_library.is_some(),
    ) {
        detection.backend = Some(Box::new(backend));
        return detection;
    }
    let nvidia = NvmlBackend::open(options);
    if let Some(backend) = accept(
        &mut detection,
        "NVML",
        nvidia,
        options.nvml_library.is_some(),
    ) {
        detection.backend = Some(Box::new(backend));
    }
    detection
}

/// A backend answers when it opened with at least one device found by the library (even if
/// `VLLM_PROFILING_DEVICES` then selected none of them).
fn accept<B: DeviceBackend + Found>(
    detection: &mut Detection,
    library: &str,
    opened: Result<B, String>,
    named_by_user: bool,
) -> Option<B> {
    match opened {
        Ok(backend) if backend.found() > 0 => Some(backend),
        Ok(_) => {
            detection.skipped.push(format!("{library}: no device"));
            None
        }
        Err(why) => {
            if named_by_user {
                detection
                    .warnings
                    .push(format!("cannot use the {library} library: {why}"));
            }
            detection.skipped.push(format!("{library}: {why}"));
            None
        }
    }
}

/// How many devices the library reported, before `VLLM_PROFILING_DEVICES` selected some.
pub(crate) trait Found {
    fn found(&self) -> u32;
}

/// Seed 001's GPU list from one sample of every device (or of the host, for the CPU).
pub fn gpu_list(detection: &mut Detection, cpu: &mut CpuProbe) -> GpuList {
    let detector = detection.detector_name().to_owned();
    let gpus = match detection.backend.as_mut() {
        None => vec![cpu.entry()],
        Some(backend) => {
            let mut samples = Vec::new();
            backend.sample(vllm_profiler_format::unix_now(), &mut samples);
            backend
                .devices()
                .iter()
                .zip(&samples)
                .map(|(device, sample)| {
                    let whole = |mb: Option<f64>| mb.map(|mb| mb.floor() as u64);
                    let total = sample.memory_total_mb.or(device.memory_total_mb);
                    let free = sample
                        .memory_free_mb
                        .or_else(|| Some(total? - sample.memory_used_mb?));
                    GpuListEntry {
                        index: device.index,
                        name: device.name.clone().unwrap_or_else(|| {
                            format!("{} GPU {}", device.gpu_type.to_uppercase(), device.index)
                        }),
                        gpu_type: device.gpu_type.clone(),
                        total_memory_mb: whole(total),
                        used_memory_mb: whole(sample.memory_used_mb),
                        free_memory_mb: whole(free),
                        utilization_percent: sample.gpu_utilization,
                    }
                })
                .collect()
        }
    };
    GpuList {
        total: gpus.len(),
        gpus,
        detector,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_selection_keeps_known_indices_once_and_reports_the_rest() {
        let mut health = health::Health::new("NVML");
        let all = Options::default();
        assert_eq!(all.selected(3, "NVML", &mut health), vec![0, 1, 2]);
        let some = Options {
            devices: Some(vec![2, 0, 2, 9]),
            ..Options::default()
        };
        assert_eq!(some.selected(3, "NVML", &mut health), vec![2, 0]);
        let warnings = health.take_warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("device 9") && warnings[0].contains("3 device(s)"));
    }

    #[test]
    fn with_absent_libraries_the_chain_ends_at_the_cpu() {
        let dir = std::env::temp_dir();
        let options = Options {
            nvml_library: Some(dir.join("vllm-profiler-absent-nvml.so")),
            amdsmi_library: Some(dir.join("vllm-profiler-absent-amd.so")),
            devices: None,
        };
        let detection = detect(&options);
        assert!(detection.backend.is_none());
        assert_eq!(detection.detector_name(), CPU_DETECTOR);
        assert_eq!(detection.skipped.len(), 2);
        assert!(detection.skipped[0].starts_with("amd-smi"));
        assert!(detection.skipped[1].starts_with("NVML"));
        assert_eq!(detection.warnings.len(), 2, "both were named by the user");
    }
}
