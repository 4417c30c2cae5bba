//! Seed 001's last fallback: the host CPU and memory, so that detection always answers.

use std::time::Duration;

use vllm_profiler_format::GpuListEntry;
pub use vllm_profiler_format::CPU_DETECTOR;

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

fn meminfo_mib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// Reads the host as one "device": CPU utilization since the previous reading (the first
/// reading waits a short window), and host memory.
#[derive(Default)]
pub struct CpuProbe {
    last: Option<(u64, u64)>,
}

/// How long the first reading measures CPU utilization over.
const FIRST_WINDOW: Duration = Duration::from_millis(100);

impl CpuProbe {
    fn utilization(&mut self) -> Option<f64> {
        let before = match self.last {
            Some(last) => last,
            None => {
                let first = cpu_times()?;
                std::thread::sleep(FIRST_WINDOW);
                first
            }
        };
        let now = cpu_times()?;
        self.last = Some(now);
        let (busy, total) = (
            now.0.saturating_sub(before.0),
            now.1.saturating_sub(before.1),
        );
        (total > 0).then(|| busy as f64 / total as f64 * 100.0)
    }

    /// Seed 001's entry for the CPU fallback: `gpu_type` is `cpu`.
    pub fn entry(&mut self) -> GpuListEntry {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let total = meminfo_mib(&meminfo, "MemTotal");
        let free = meminfo_mib(&meminfo, "MemAvailable");
        GpuListEntry {
            index: 0,
            name: cpu_model().unwrap_or_else(|| "CPU".to_owned()),
            gpu_type: "cpu".to_owned(),
            total_memory_mb: total,
            used_memory_mb: total.zip(free).map(|(t, f)| t.saturating_sub(f)),
            free_memory_mb: free,
            utilization_percent: self.utilization(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_entry_reads_real_host_figures() {
        let entry = CpuProbe::default().entry();
        assert_eq!(entry.gpu_type, "cpu");
        let total = entry
            .total_memory_mb
            .expect("MemTotal is readable on Linux");
        assert_eq!(
            entry.used_memory_mb.unwrap() + entry.free_memory_mb.unwrap(),
            total
        );
        let utilization = entry.utilization_percent.expect("/proc/stat is readable");
        assert!((0.0..=100.0).contains(&utilization), "{utilization}");
    }

    #[test]
    fn meminfo_is_read_in_mib() {
        let text = "MemTotal:       2097152 kB\nMemAvailable:    1048576 kB\n";
        assert_eq!(meminfo_mib(text, "MemTotal"), Some(2048));
        assert_eq!(meminfo_mib(text, "MemAvailable"), Some(1024));
        assert_eq!(meminfo_mib(text, "Nope"), None);
    }
}
