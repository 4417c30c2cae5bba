//! GPU backends and the detector chain: amd-smi, then NVML, then the CPU; the backend
//! trait they implement, the host probe sampled beside them, and the per-host shared sampler.
//!
//! Unsafe code is denied here (the workspace's lints) except in `amdsmi::sys`, the calls of the
//! one native loader written by hand; NVML goes through `nvml-wrapper`'s safe API.

mod amdsmi;
mod backend;
pub mod cpu;
mod detect;
pub mod fork_closed;
mod gpm;
mod health;
mod host;
pub mod nvml;
mod options;
pub mod shared;
mod vendor;

pub use amdsmi::{AmdSmiBackend, AMDSMI_DETECTOR};
pub use backend::{process_memory_mb, DeviceBackend, DeviceReading};
pub use cpu::{CpuProbe, CPU_DETECTOR};
pub use detect::{detect, gpu_list, Detection};
pub use host::{HostProbe, HOST_MEMORY_REFRESH};
pub use nvml::{NvmlBackend, NVML_DETECTOR};
pub use options::Options;
pub use shared::SharedBackend;
pub use vendor::{Reader, VendorBackend};
