//! The one atomic word the hot path reads: whether recording is on, or armed (off, but the
//! first call turns it on), and the generation of the current session. Its layout lives here
//! only; `runtime` changes it through the named transitions below.

use std::sync::atomic::{AtomicU64, Ordering};

/// Recording is on.
const ENABLED: u64 = 1;
/// Not on yet, but the first call turns it on from the stored configuration (a process that
/// did not match `VLLM_PROFILING_PROCESSES`, or a forked child of a profiled process).
const ARMED: u64 = 2;
/// The bits above these two hold the current session's generation.
const GENERATION_SHIFT: u32 = 8;

/// One reading of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GateState(u64);

impl GateState {
    /// Armed, before any session (the process filter did not match, or not yet).
    pub(crate) const ARMED: GateState = GateState(ARMED);

    /// On, for the session of `generation`.
    pub(crate) fn enabled(generation: u64) -> GateState {
        GateState((generation << GENERATION_SHIFT) | ENABLED | ARMED)
    }

    #[inline]
    pub(crate) fn is_enabled(self) -> bool {
        self.0 & ENABLED != 0
    }

    #[inline]
    pub(crate) fn is_armed(self) -> bool {
        self.0 & ARMED != 0
    }

    /// Neither on nor armed: recording calls return at once.
    #[inline]
    pub(crate) fn is_off(self) -> bool {
        self.0 & (ENABLED | ARMED) == 0
    }

    #[inline]
    pub(crate) fn generation(self) -> u64 {
        self.0 >> GENERATION_SHIFT
    }

    /// Off, keeping the generation (a later session takes the next one).
    pub(crate) fn stopped(self) -> GateState {
        GateState(self.0 & !(ENABLED | ARMED))
    }

    /// Armed, keeping the generation: a forked child's, whose first call starts its own session.
    pub(crate) fn rearmed(self) -> GateState {
        GateState((self.generation() << GENERATION_SHIFT) | ARMED)
    }
}

/// The gate itself.
pub(crate) struct Gate(AtomicU64);

impl Gate {
    pub(crate) const fn new() -> Gate {
        Gate(AtomicU64::new(0))
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> GateState {
        GateState(self.0.load(order))
    }

    #[inline]
    pub(crate) fn store(&self, state: GateState, order: Ordering) {
        self.0.store(state.0, order);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_keep_the_generation_and_name_their_state() {
        let on = GateState::enabled(5);
        assert!(on.is_enabled() && on.is_armed() && !on.is_off());
        assert_eq!(on.generation(), 5);
        let stopped = on.stopped();
        assert!(stopped.is_off() && !stopped.is_enabled());
        assert_eq!(stopped.generation(), 5);
        let child = on.rearmed();
        assert!(child.is_armed() && !child.is_enabled() && !child.is_off());
        assert_eq!(child.generation(), 5);
        assert_eq!(GateState::ARMED.generation(), 0);
        let gate = Gate::new();
        assert!(gate.load(Ordering::Relaxed).is_off());
        gate.store(on, Ordering::Relaxed);
        assert_eq!(gate.load(Ordering::Relaxed), on);
    }
}
