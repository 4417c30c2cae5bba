//! The session's clock, injectable: the system's for a live session, a manual one that tests
//! and benches set (so that they give exact times instead of sleeping).
//!
//! `now_ns` is on the hot path (every begin and end): one predictable branch, then either the
//! monotonic clock or one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vllm_profiler_format::unix_now;

#[derive(Debug, Clone)]
pub enum Clock {
    /// Monotonic time since `started`, and the system's wall clock.
    System { started: Instant },
    /// Time as a test sets it.
    Manual(Arc<ManualClock>),
}

/// A clock that moves only when told: nanoseconds since its session started, and the wall
/// clock reading of that start.
#[derive(Debug)]
pub struct ManualClock {
    ns: AtomicU64,
    started_unix: f64,
}

impl ManualClock {
    /// A clock at 0 ns, whose start is `started_unix` on the wall clock.
    pub fn new(started_unix: f64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            ns: AtomicU64::new(0),
            started_unix,
        })
    }

    pub fn set_ns(&self, ns: u64) {
        self.ns.store(ns, Ordering::Relaxed);
    }

    pub fn advance_ns(&self, ns: u64) {
        self.ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.advance_ns(ms.saturating_mul(1_000_000));
    }
}

impl Clock {
    /// The system's clock, started now.
    pub fn system() -> Clock {
        Clock::System {
            started: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::System { started } => started.elapsed().as_nanos() as u64,
            Clock::Manual(manual) => manual.ns.load(Ordering::Relaxed),
        }
    }

    /// The wall clock now, in Unix seconds.
    pub fn unix_now(&self) -> f64 {
        match self {
            Clock::System { .. } => unix_now(),
            Clock::Manual(manual) => manual.started_unix + self.now_ns() as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let manual = ManualClock::new(1000.0);
        let clock = Clock::Manual(manual.clone());
        assert_eq!((clock.now_ns(), clock.unix_now()), (0, 1000.0));
        manual.advance_ms(1500);
        assert_eq!((clock.now_ns(), clock.unix_now()), (1_500_000_000, 1001.5));
        manual.set_ns(7);
        assert_eq!(clock.now_ns(), 7);
    }

    #[test]
    fn the_system_clock_is_monotonic_and_near_the_wall_clock() {
        let clock = Clock::system();
        let (a, b) = (clock.now_ns(), clock.now_ns());
        assert!(b >= a);
        assert!((clock.unix_now() - unix_now()).abs() < 1.0);
    }
}
