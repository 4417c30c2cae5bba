//! Seed 001's detector chain (amd-smi, then NVML, then the CPU) and its GPU list.

use vllm_profiler_format::{unix_now, GpuList, GpuListEntry, CPU_DETECTOR};

use crate::amdsmi::AmdSmiBackend;
use crate::backend::DeviceBackend;
use crate::cpu::CpuProbe;
use crate::nvml::NvmlBackend;
use crate::options::{Found, Options};

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

/// Seed 001's GPU list from one sample of every device (or of the host, for the CPU).
pub fn gpu_list(detection: &mut Detection, cpu: &mut CpuProbe) -> GpuList {
    let detector = detection.detector_name().to_owned();
    let gpus = match detection.backend.as_mut() {
        None => vec![cpu.entry()],
        Some(backend) => {
            let mut samples = Vec::new();
            backend.sample(unix_now(), &mut samples);
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
