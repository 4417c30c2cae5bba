//! What the NVML and amd-smi backends share: the cache of initialised libraries, one per
//! process and library path, and the [`DeviceBackend`] around a vendor's device reader.

use std::ffi::OsString;
use std::sync::Mutex;

use vllm_profiler_format::GpuDevice;

use crate::backend::{DeviceBackend, DeviceReading};
use crate::health::Health;
use crate::options::Found;

/// Every library of one vendor initialised in this process, by the name it was loaded from.
/// Leaked on purpose and never shut down: a sampler of another session may still use it, and
/// a shutdown at exit would race with a sampler still running (and nvml-wrapper's `Drop`
/// panics when the library lacks `nvmlShutdown`).
pub(crate) struct Libraries<T: 'static>(Mutex<Vec<(OsString, &'static T)>>);

impl<T: Sync + 'static> Libraries<T> {
    pub(crate) const fn new() -> Self {
        Libraries(Mutex::new(Vec::new()))
    }

    /// The library loaded from `name`, initialised by `load` on first use.
    pub(crate) fn get_or_load<E>(
        &self,
        name: &OsString,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<&'static T, E> {
        let lock = || self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, library)) = lock().iter().find(|(n, _)| n == name) {
            return Ok(library);
        }
        // Initialised without the lock held: an init can take seconds, and a fork meanwhile
        // would leave the child a lock whose owner does not exist there.
        let library: &'static T = Box::leak(Box::new(load()?));
        let mut libraries = lock();
        if let Some((_, first)) = libraries.iter().find(|(n, _)| n == name) {
            return Ok(first); // another thread won the race; ours stays leaked, never dropped
        }
        libraries.push((name.clone(), library));
        Ok(library)
    }
}

/// Reads one vendor's open devices.
pub trait Reader: Send {
    /// Reads the device at `position`, through `health` (see the `health` module).
    fn read(&mut self, position: usize, health: &mut Health, timestamp: f64) -> DeviceReading;
}

/// A vendor library's backend: the devices it found and opened, their health, and the
/// reader that samples them.
pub struct VendorBackend<R> {
    detector: &'static str,
    found: u32,
    described: Vec<GpuDevice>,
    health: Health,
    reader: R,
}

impl<R> VendorBackend<R> {
    pub(crate) fn new(
        detector: &'static str,
        found: u32,
        described: Vec<GpuDevice>,
        health: Health,
        reader: R,
    ) -> Self {
        VendorBackend {
            detector,
            found,
            described,
            health,
            reader,
        }
    }
}

impl<R> Found for VendorBackend<R> {
    fn found(&self) -> u32 {
        self.found
    }
}

impl<R: Reader> DeviceBackend for VendorBackend<R> {
    fn detector_name(&self) -> &'static str {
        self.detector
    }

    fn devices(&self) -> &[GpuDevice] {
        &self.described
    }

    fn read_device(&mut self, position: usize, timestamp: f64) -> DeviceReading {
        self.reader.read(position, &mut self.health, timestamp)
    }

    fn take_warnings(&mut self) -> Vec<String> {
        self.health.take_warnings()
    }
}
