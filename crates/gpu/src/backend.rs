//! The device backend trait that GPU backends (NVML, amd-smi, the shared sampler) implement,
//! and what one reading of a device gives.

use vllm_profiler_format::{GpuDevice, GpuSample, ProcessMemory};

/// A source of per-device GPU samples.
pub trait DeviceBackend: Send {
    /// Name of the detector that answered, as seed 001 reports it (`NVMLDetector`, ...).
    fn detector_name(&self) -> &'static str;
    /// The sampled devices, in the order `sample` reports them.
    fn devices(&self) -> &[GpuDevice];
    /// Reads the device at `position` in `devices()` from the library. A metric that cannot be
    /// read is `None`.
    fn read_device(&mut self, position: usize, timestamp: f64) -> DeviceReading;
    /// Appends the devices' new samples: one per device for a backend that reads the library;
    /// possibly fewer for one that shares another process's readings (see the GPU crate's
    /// `shared` module).
    fn sample(&mut self, timestamp: f64, out: &mut Vec<GpuSample>) {
        for position in 0..self.devices().len() {
            out.push(self.read_device(position, timestamp).sample);
        }
    }
    /// Messages for the user gathered since the last call (each problem is reported once).
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// One reading of a device: its sample, whose `process_memory_used_mb` is the calling
/// process's, and the memory of every process on it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReading {
    pub sample: GpuSample,
    /// `None` when the library could not list them.
    pub processes: Option<Vec<ProcessMemory>>,
}

/// Process `pid`'s memory on a device, MiB, from the device's process list: the sum of its
/// entries (a process can appear once per context), 0 when it has none, and unknown when the
/// list or one of its entries is.
pub fn process_memory_mb(processes: Option<&[ProcessMemory]>, pid: u32) -> Option<f64> {
    processes?
        .iter()
        .filter(|p| p.pid == pid)
        .map(|p| p.used_memory_mb)
        .sum::<Option<f64>>()
        // An empty f64 sum is -0.0; a report says 0.
        .map(|mb| mb + 0.0)
}
