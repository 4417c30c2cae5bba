//! The newest sample's figures for the primary device, published by the sampler and read by
//! every step begin and end: lock-free, `f32` bits in atomics, NaN for unknown.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use vllm_profiler_format::MemorySource;

/// Every memory source, at the index that stands for it in [`LatestMetrics`]'s atomic byte.
const SOURCES: [MemorySource; 4] = [
    MemorySource::None,
    MemorySource::HostRss,
    MemorySource::Gpu,
    MemorySource::GpuProcess,
];

/// The index of `source` in [`SOURCES`]: a match, so that a new source does not compile until
/// it has one (a test holds the two to each other).
const fn index_of(source: MemorySource) -> u8 {
    match source {
        MemorySource::None => 0,
        MemorySource::HostRss => 1,
        MemorySource::Gpu => 2,
        MemorySource::GpuProcess => 3,
    }
}

#[derive(Debug)]
pub struct LatestMetrics {
    utilization: AtomicU32,
    memory_mb: AtomicU32,
    source: AtomicU8,
}

impl Default for LatestMetrics {
    fn default() -> Self {
        LatestMetrics {
            utilization: AtomicU32::new(f32::NAN.to_bits()),
            memory_mb: AtomicU32::new(f32::NAN.to_bits()),
            source: AtomicU8::new(0),
        }
    }
}

impl LatestMetrics {
    /// (utilization %, memory MB); NaN where unknown.
    #[inline]
    pub fn read(&self) -> (f32, f32) {
        (
            f32::from_bits(self.utilization.load(Ordering::Relaxed)),
            f32::from_bits(self.memory_mb.load(Ordering::Relaxed)),
        )
    }

    pub fn publish(&self, utilization: Option<f64>, memory_mb: Option<f64>, source: MemorySource) {
        let bits = |v: Option<f64>| v.map_or(f32::NAN, |v| v as f32).to_bits();
        self.utilization.store(bits(utilization), Ordering::Relaxed);
        self.memory_mb.store(bits(memory_mb), Ordering::Relaxed);
        self.source.store(index_of(source), Ordering::Relaxed);
    }

    pub fn memory_source(&self) -> MemorySource {
        SOURCES
            .get(usize::from(self.source.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(MemorySource::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_match_agree() {
        for (index, source) in SOURCES.iter().enumerate() {
            assert_eq!(usize::from(index_of(*source)), index, "{source:?}");
        }
    }

    #[test]
    fn every_memory_source_reads_back_as_published() {
        let latest = LatestMetrics::default();
        assert_eq!(latest.memory_source(), MemorySource::None);
        for source in SOURCES {
            latest.publish(Some(50.0), Some(64.5), source);
            assert_eq!(latest.memory_source(), source);
            assert_eq!(latest.read(), (50.0, 64.5));
        }
        latest.publish(None, None, MemorySource::Gpu);
        let (utilization, memory) = latest.read();
        assert!(utilization.is_nan() && memory.is_nan());
    }
}
