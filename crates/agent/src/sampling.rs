//! One tick of the sampler thread (`threads::sample_loop` runs them): a sample of the host
//! and the devices, stored in the session, and the figures that steps carry published.

use vllm_profiler_core::Session;
use vllm_profiler_format::{primary_device, unix_now, GpuSample, MemorySource, CPU_DETECTOR};
use vllm_profiler_gpu::{DeviceBackend, HostProbe};

/// One sampler: the host probe and, when a GPU answered, its device backend.
pub struct Sampler {
    host: HostProbe,
    devices: Option<Box<dyn DeviceBackend>>,
    buf: Vec<GpuSample>,
    /// The newest sample of each device so far: a backend that shares another process's
    /// readings may have no new sample of a device on a tick.
    latest: Vec<GpuSample>,
    /// The device steps read from at the last tick (see [`primary_device`]).
    primary: Option<u32>,
    described: bool,
}

impl Sampler {
    pub fn new(devices: Option<Box<dyn DeviceBackend>>) -> Self {
        Sampler {
            host: HostProbe::default(),
            devices,
            buf: Vec::new(),
            latest: Vec::new(),
            primary: None,
            described: false,
        }
    }

    pub fn detector_name(&self) -> &'static str {
        self.devices
            .as_ref()
            .map_or(CPU_DETECTOR, |d| d.detector_name())
    }

    /// Takes one sample of everything, stores it in `session` and publishes the figures that
    /// steps read from this process's device (see [`primary_device`]) as of its newest sample,
    /// or the process RSS with no GPU.
    pub fn tick(&mut self, session: &Session) {
        if !self.described {
            self.described = true;
            let devices = self.devices.as_ref().map_or(&[][..], |d| d.devices());
            session.describe_devices(self.detector_name(), devices.to_vec());
        }
        let timestamp = unix_now();
        let host = self.host.sample(timestamp);
        self.buf.clear();
        if let Some(devices) = self.devices.as_mut() {
            devices.sample(timestamp, &mut self.buf);
        }
        for sample in &self.buf {
            // By device index, whichever device's first sample came first (a shared reader can
            // get one device's sample a tick before another's): "the first device" is index 0.
            match (self.latest).binary_search_by_key(&sample.device_id, |s| s.device_id) {
                Ok(i) => self.latest[i].clone_from(sample),
                Err(i) => self.latest.insert(i, sample.clone()),
            }
        }
        let primary = primary_device(&self.latest, self.primary);
        if let Some(gpu) = primary {
            self.primary = Some(gpu.device_id);
        }
        match primary {
            // This process's own memory when it holds some there; otherwise (not in the
            // device's process list: another pid namespace, or an engine process that holds
            // no GPU memory) the device's memory in use.
            Some(gpu) => match gpu.process_memory_used_mb.filter(|&mb| mb > 0.0) {
                Some(own) => session.latest().publish(
                    gpu.gpu_utilization,
                    Some(own),
                    MemorySource::GpuProcess,
                ),
                None => session.latest().publish(
                    gpu.gpu_utilization,
                    gpu.memory_used_mb,
                    MemorySource::Gpu,
                ),
            },
            // Devices, but no sample of any yet: steps stay without figures until one comes.
            None if self
                .devices
                .as_ref()
                .is_some_and(|d| !d.devices().is_empty()) => {}
            None => session
                .latest()
                .publish(None, host.process_rss_mb, MemorySource::HostRss),
        }
        session.record_samples(host, &self.buf);
    }

    /// The backend's messages since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        self.devices
            .as_mut()
            .map_or_else(Vec::new, |d| d.take_warnings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_tick_feeds_history_and_step_memory() {
        let s = Session::new(
            4242,
            1,
            vllm_profiler_core::Settings {
                max_history: 10,
                ..vllm_profiler_core::Settings::default()
            },
        );
        let mut sampler = Sampler::new(None);
        sampler.tick(&s);
        let mut rec = s.register_thread(1);
        let h = rec.step_begin(1, 1).unwrap();
        rec.step_end(h).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = s.export(dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        let history: vllm_profiler_format::GpuHistory = serde_json::from_slice(
            &std::fs::read(dir.path().join("gpu_history_4242.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(history.detector, "CPUDetector");
        assert!(
            history.gpu_history.is_empty(),
            "no GPU: no made-up device samples"
        );
        assert_eq!(history.host_history.len(), 1);
        let summary = s.summary(None).unwrap();
        assert_eq!(summary.memory_source, MemorySource::HostRss);
        let rss = history.host_history[0].process_rss_mb.unwrap();
        assert!((summary.avg_memory_mb.unwrap() - rss).abs() < 1.0);
    }
}
