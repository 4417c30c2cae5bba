//! The sampler's building blocks: host figures from `/proc` and `getrusage`, and the device
//! backend trait that GPU backends (NVML, amd-smi) implement. The sampler thread itself lives in
//! the agent; one `Sampler::tick` is one sample of everything.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::resource::{getrusage, UsageWho};
use vllm_profiler_format::{GpuDevice, GpuSample, HostSample, MemorySource, ProcessMemory};

use crate::session::Session;

/// Detector name reported when no GPU backend answered (seed 001's last fallback).
pub const CPU_DETECTOR: &str = "CPUDetector";

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

/// Reads this process's CPU time and RSS and the host's memory. Keeps its `/proc` files open
/// and re-reads them with `pread`, so a sample costs a few syscalls and no allocation. RSS
/// comes from `statm` (a few numbers) rather than `status`, which the kernel formats whole.
pub struct HostProbe {
    statm: Option<File>,
    page_size: u64,
    meminfo: Option<File>,
    buf: Vec<u8>,
    last_cpu: Option<(Instant, Duration)>,
    /// The host's memory and when it was read.
    host_memory: Option<(Instant, HostMemory)>,
    /// How long a reading of `/proc/meminfo` is reused: the kernel formats the whole file on
    /// every read (most of a tick's cost at a 1 ms interval), and the host's memory does not
    /// need millisecond resolution. The process's own figures are read on every tick.
    pub host_memory_refresh: Duration,
}

/// The host's (total, used) memory in MiB.
type HostMemory = (Option<f64>, Option<f64>);

/// Default of `HostProbe::host_memory_refresh`.
pub const HOST_MEMORY_REFRESH: Duration = Duration::from_millis(100);

impl Default for HostProbe {
    fn default() -> Self {
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(4096);
        HostProbe {
            statm: File::open("/proc/self/statm").ok(),
            page_size,
            meminfo: File::open("/proc/meminfo").ok(),
            buf: vec![0; 8192],
            last_cpu: None,
            host_memory: None,
            host_memory_refresh: HOST_MEMORY_REFRESH,
        }
    }
}

/// Resident pages, the second field of `/proc/self/statm`.
fn statm_resident_pages(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn process_cpu_time() -> Option<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Some(tv(usage.user_time()) + tv(usage.system_time()))
}

/// The value in kB of `key` in a `/proc` "Key:   123 kB" listing.
fn kb_field(text: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl HostProbe {
    fn read(file: &Option<File>, buf: &mut [u8]) -> Option<usize> {
        file.as_ref()?.read_at(buf, 0).ok()
    }

    /// The host's (total, used) memory in MiB, from `/proc/meminfo`.
    fn read_host_memory(&mut self) -> HostMemory {
        let Some(n) = Self::read(&self.meminfo, &mut self.buf) else {
            return (None, None);
        };
        let text = &self.buf[..n];
        let total = kb_field(text, "MemTotal");
        let available = kb_field(text, "MemAvailable");
        (
            total.map(|kb| kb as f64 / 1024.0),
            total
                .zip(available)
                .map(|(t, a)| t.saturating_sub(a) as f64 / 1024.0),
        )
    }

    pub fn sample(&mut self, timestamp: f64) -> HostSample {
        let now = Instant::now();
        let cpu = process_cpu_time();
        let process_cpu_percent = match (cpu, self.last_cpu) {
            (Some(cpu), Some((then, cpu_then))) if now > then => Some(
                cpu.saturating_sub(cpu_then).as_secs_f64() / (now - then).as_secs_f64() * 100.0,
            ),
            _ => None,
        };
        if let Some(cpu) = cpu {
            self.last_cpu = Some((now, cpu));
        }
        let process_rss_mb = Self::read(&self.statm, &mut self.buf)
            .and_then(|n| statm_resident_pages(&self.buf[..n]))
            .map(|pages| (pages * self.page_size) as f64 / (1024.0 * 1024.0));
        let (host_memory_total_mb, host_memory_used_mb) = match self.host_memory {
            Some((read_at, figures)) if now.duration_since(read_at) < self.host_memory_refresh => {
                figures
            }
            _ => {
                let figures = self.read_host_memory();
                self.host_memory = Some((now, figures));
                figures
            }
        };
        HostSample {
            timestamp,
            process_cpu_percent,
            process_rss_mb,
            host_memory_used_mb,
            host_memory_total_mb,
        }
    }
}

/// One sampler: the host probe and, when a GPU answered, its device backend.
pub struct Sampler {
    host: HostProbe,
    devices: Option<Box<dyn DeviceBackend>>,
    buf: Vec<GpuSample>,
    /// The newest sample of each device so far: a backend that shares another process's
    /// readings may have no new sample of a device on a tick.
    latest: Vec<GpuSample>,
    described: bool,
}

impl Sampler {
    pub fn new(devices: Option<Box<dyn DeviceBackend>>) -> Self {
        Sampler {
            host: HostProbe::default(),
            devices,
            buf: Vec::new(),
            latest: Vec::new(),
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
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let host = self.host.sample(timestamp);
        self.buf.clear();
        if let Some(devices) = self.devices.as_mut() {
            devices.sample(timestamp, &mut self.buf);
        }
        for sample in &self.buf {
            match self
                .latest
                .iter_mut()
                .find(|s| s.device_id == sample.device_id)
            {
                Some(kept) => kept.clone_from(sample),
                None => self.latest.push(sample.clone()),
            }
        }
        match primary_device(&self.latest) {
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

/// The device whose figures steps carry: the first one on which this process holds memory
/// (a vLLM worker uses one GPU of several), else the first sampled device.
pub fn primary_device(samples: &[GpuSample]) -> Option<&GpuSample> {
    samples
        .iter()
        .find(|s| s.process_memory_used_mb.is_some_and(|mb| mb > 0.0))
        .or_else(|| samples.first())
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
        assert_eq!(primary_device(&samples).unwrap().device_id, 1);
        let none_held = [gpu(3, None), gpu(4, Some(0.0))];
        assert_eq!(primary_device(&none_held).unwrap().device_id, 3);
        assert!(primary_device(&[]).is_none());
    }

    #[test]
    fn statm_resident_field_is_the_second() {
        assert_eq!(statm_resident_pages(b"1000 250 30 4 0 500 0\n"), Some(250));
        assert_eq!(statm_resident_pages(b"1000"), None);
    }

    #[test]
    fn rss_from_statm_matches_status_vmrss() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kb = kb_field(status.as_bytes(), "VmRSS").unwrap() as f64;
        let rss_mb = HostProbe::default().sample(1.0).process_rss_mb.unwrap();
        // The same figure read a moment apart; allow the test's own growth.
        assert!(
            (rss_mb - vm_rss_kb / 1024.0).abs() < 4.0,
            "{rss_mb} vs {vm_rss_kb} kB"
        );
    }

    #[test]
    fn parses_proc_kb_fields() {
        let text = b"Name:\tx\nVmRSS:\t   2048 kB\nMemTotal:       16384 kB\n";
        assert_eq!(kb_field(text, "VmRSS"), Some(2048));
        assert_eq!(kb_field(text, "MemTotal"), Some(16384));
        assert_eq!(kb_field(text, "Missing"), None);
    }

    #[test]
    fn host_sample_reads_real_figures_and_cpu_after_two_ticks() {
        let mut probe = HostProbe::default();
        let first = probe.sample(1.0);
        assert!(first.process_cpu_percent.is_none(), "no interval yet");
        let rss = first.process_rss_mb.expect("VmRSS is readable on Linux");
        assert!(rss > 1.0, "rss {rss}");
        assert!(first.host_memory_total_mb.unwrap() > first.host_memory_used_mb.unwrap());
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let second = probe.sample(2.0);
        assert!(second.process_cpu_percent.unwrap() > 0.0);
    }

    #[test]
    fn host_memory_is_reused_within_its_refresh_and_read_again_after() {
        let mut probe = HostProbe {
            host_memory_refresh: Duration::from_secs(3600),
            ..HostProbe::default()
        };
        let first = probe.sample(1.0);
        // A planted reading shows whether the next tick read /proc/meminfo or reused it.
        let (read_at, _) = probe.host_memory.unwrap();
        probe.host_memory = Some((read_at, (Some(1.0), Some(0.5))));
        let second = probe.sample(2.0);
        assert_eq!(
            (second.host_memory_total_mb, second.host_memory_used_mb),
            (Some(1.0), Some(0.5))
        );
        probe.host_memory_refresh = Duration::ZERO;
        let third = probe.sample(3.0);
        assert_eq!(third.host_memory_total_mb, first.host_memory_total_mb);
        assert_ne!(third.host_memory_used_mb, Some(0.5));
    }
}
