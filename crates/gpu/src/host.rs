//! Host figures from `/proc` and `getrusage`: this process's CPU time and RSS, and the
//! host's memory, taken on every sampler tick.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use vllm_profiler_format::{mib, HostSample};

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
            .map(|pages| mib(pages * self.page_size));
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

#[cfg(test)]
mod tests {
    use super::*;

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
