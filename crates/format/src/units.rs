//! The units every crate converts to, in one place: time as Unix seconds, memory in MiB.

/// Bytes in one MiB (2^20), the unit of every `_mb` field, as seed 001 counts them.
pub const BYTES_PER_MIB: u64 = 1 << 20;

/// Bytes to MiB (exact in f64 below 2^53 bytes).
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / BYTES_PER_MIB as f64
}

/// Unix seconds, the timestamp of every sample and report; 0 before the epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_is_two_to_the_twentieth_bytes() {
        assert_eq!(mib(3 << 20), 3.0);
        assert_eq!(mib(512 << 10), 0.5);
        assert!(unix_now() > 1.6e9);
    }
}
