//! NVIDIA GPUs through NVML, with `nvml-wrapper`'s safe API (no unsafe here).
//!
//! NVML is loaded lazily, by the first detection (on the sampler thread or in the CLI), and is
//! initialised once per process and library path, then kept for the life of the process: it is
//! never shut down, because nvml-wrapper's `Drop` panics when the library lacks `nvmlShutdown`,
//! and because a shutdown at exit would race with a sampler still running.

use std::ffi::OsString;
use std::path::Path;

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use vllm_profiler_format::{mib, GpuDevice, GpuSample, ProcessMemory};

use crate::backend::{process_memory_mb, DeviceReading};
use crate::gpm::Gpm;
use crate::health::{Failure, Health, Metric};
use crate::options::Options;
use crate::vendor::{Libraries, Reader, VendorBackend};

pub const NVML_DETECTOR: &str = "NVMLDetector";

/// Library names tried, in order, when no path is given.
const DEFAULT_LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// Every NVML initialised in this process (see the module comment).
static INSTANCES: Libraries<Nvml> = Libraries::new();

fn initialise(library: &OsString) -> Result<&'static Nvml, NvmlError> {
    INSTANCES.get_or_load(library, || Nvml::builder().lib_path(library).init())
}

/// Loads and initialises NVML from `path`, or from the default names in order.
fn load(path: Option<&Path>) -> Result<&'static Nvml, String> {
    let candidates: Vec<OsString> = match path {
        Some(path) => vec![path.as_os_str().to_owned()],
        None => DEFAULT_LIBRARIES.iter().map(OsString::from).collect(),
    };
    let mut errors = Vec::new();
    for library in &candidates {
        match initialise(library) {
            Ok(nvml) => return Ok(nvml),
            Err(err) => errors.push(format!("{}: {}", library.to_string_lossy(), describe(&err))),
        }
    }
    Err(errors.join("; "))
}

fn describe(err: &NvmlError) -> String {
    match err {
        NvmlError::LibloadingError(inner) => format!("cannot load the library ({inner})"),
        other => other.to_string(),
    }
}

fn failure(err: NvmlError) -> Failure {
    match err {
        NvmlError::FailedToLoadSymbol(detail) => Failure::MissingSymbol(detail),
        NvmlError::NotSupported => Failure::NotSupported,
        NvmlError::GpuLost => Failure::Lost(NvmlError::GpuLost.to_string()),
        other => Failure::Failed(other.to_string()),
    }
}

struct OpenDevice {
    handle: Device<'static>,
    index: u32,
    /// `None` where the library or the device has no GPM.
    gpm: Option<Gpm>,
}

/// Samples every selected NVIDIA device.
pub type NvmlBackend = VendorBackend<NvmlDevices>;

/// The open NVIDIA devices.
pub struct NvmlDevices {
    /// This process, whose GPU memory steps report. A backend lives in one process: a forked
    /// child detects again.
    pid: u32,
    devices: Vec<OpenDevice>,
}

impl NvmlBackend {
    /// Loads NVML and opens the selected devices. `Err` says why NVML cannot answer; a
    /// library without devices answers `Ok` with none.
    pub fn open(options: &Options) -> Result<NvmlBackend, String> {
        let nvml = load(options.nvml_library.as_deref())?;
        let count = nvml
            .device_count()
            .map_err(|err| format!("cannot count devices: {err}"))?;
        let mut health = Health::new("NVML");
        let mut devices = Vec::new();
        let mut described = Vec::new();
        for index in options.selected(count, "NVML", &mut health) {
            let handle = match nvml.device_by_index(index) {
                Ok(handle) => handle,
                Err(err) => {
                    health.warn(format!("NVML cannot open device {index} ({err}): skipped"));
                    continue;
                }
            };
            described.push(GpuDevice {
                index,
                name: handle.name().ok(),
                uuid: handle.uuid().ok(),
                gpu_type: "nvidia".to_owned(),
                memory_total_mb: handle.memory_info().ok().map(|m| mib(m.total)),
            });
            let gpm = Gpm::open(nvml, &handle);
            devices.push(OpenDevice { handle, index, gpm });
        }
        let reader = NvmlDevices {
            pid: std::process::id(),
            devices,
        };
        Ok(VendorBackend::new(
            NVML_DETECTOR,
            count,
            described,
            health,
            reader,
        ))
    }
}

impl Reader for NvmlDevices {
    fn read(&mut self, position: usize, health: &mut Health, timestamp: f64) -> DeviceReading {
        let device = &mut self.devices[position];
        let (handle, index) = (&device.handle, device.index);
        // Utilization first: it opens the sample (the fake NVML advances its script on it).
        let utilization = health.read(position, index, Metric::Utilization, || {
            handle.utilization_rates().map_err(failure)
        });
        let memory = health.read(position, index, Metric::Memory, || {
            handle.memory_info().map_err(failure)
        });
        let processes = health
            .read(position, index, Metric::ProcessMemory, || {
                handle.running_compute_processes().map_err(failure)
            })
            .map(|processes| {
                processes
                    .iter()
                    .map(|p| ProcessMemory {
                        pid: p.pid,
                        used_memory_mb: match p.used_gpu_memory {
                            UsedGpuMemory::Used(bytes) => Some(mib(bytes)),
                            // MIG and vGPU hide per-process memory: unknown, not 0.
                            UsedGpuMemory::Unavailable => None,
                        },
                    })
                    .collect::<Vec<_>>()
            });
        let mut number = |metric: Metric, call: &dyn Fn() -> Result<u32, NvmlError>| {
            health
                .read(position, index, metric, || call().map_err(failure))
                .map(f64::from)
        };
        let temperature = number(Metric::Temperature, &|| {
            handle.temperature(TemperatureSensor::Gpu)
        });
        let power_mw = number(Metric::Power, &|| handle.power_usage());
        let limit_mw = number(Metric::PowerLimit, &|| handle.enforced_power_limit());
        let sm_clock = number(Metric::SmClock, &|| handle.clock_info(Clock::SM));
        let memory_clock = number(Metric::MemoryClock, &|| handle.clock_info(Clock::Memory));
        let gpm = device.gpm.as_mut().and_then(|gpm| {
            if !health.wanted(position, Metric::Gpm) {
                gpm.forget(); // lost: the first reading back opens a new interval
                return None;
            }
            let answered = gpm.answered();
            health
                .read(position, index, Metric::Gpm, || {
                    gpm.read(handle).map_err(|err| match err {
                        // Once it answered, a refusal is for this sample only (one warning).
                        NvmlError::NotSupported if answered => {
                            Failure::Failed("GPM not supported at this sample".to_owned())
                        }
                        other => failure(other),
                    })
                })
                .flatten()
        });
        let gpm = gpm.unwrap_or_default();
        let total = memory.as_ref().map(|m| m.total);
        let sample = GpuSample {
            timestamp,
            device_id: index,
            gpu_utilization: utilization.as_ref().map(|u| f64::from(u.gpu)),
            memory_controller_utilization: utilization.as_ref().map(|u| f64::from(u.memory)),
            memory_utilization: memory
                .as_ref()
                .filter(|m| m.total > 0)
                .map(|m| m.used as f64 / m.total as f64 * 100.0),
            memory_used_mb: memory.as_ref().map(|m| mib(m.used)),
            memory_total_mb: total.map(mib),
            memory_free_mb: memory.as_ref().map(|m| mib(m.free)),
            temperature,
            power_draw: power_mw.map(|mw| mw / 1000.0),
            power_limit: limit_mw.map(|mw| mw / 1000.0),
            sm_clock_mhz: sm_clock,
            memory_clock_mhz: memory_clock,
            process_memory_used_mb: process_memory_mb(processes.as_deref(), self.pid),
            sm_active_percent: gpm.sm_active_percent,
            sm_occupancy_percent: gpm.sm_occupancy_percent,
            tensor_active_percent: gpm.tensor_active_percent,
            dram_bandwidth_percent: gpm.dram_bandwidth_percent,
        };
        DeviceReading { sample, processes }
    }
}
