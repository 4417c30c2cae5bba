//! The schedule of the torch profiler's windows, which the Python package runs
//! (`VLLM_PROFILING_TORCH_OPS`): published by each configuration that takes effect, where a
//! step can read it with one atomic load (`crate::ffi` gives it out, and takes the windows).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;

/// `every << 32 | steps`; 0: no windows.
static SCHEDULE: AtomicU64 = AtomicU64::new(0);

/// Longest window document taken, in bytes: a full window (65536 ops in the trace and as many
/// kernels) is about 12 MiB of JSON.
pub(crate) const MAX_WINDOW_JSON: usize = 16 << 20;

/// Called whenever a configuration takes effect.
pub(crate) fn publish(config: &Config) {
    let schedule = if config.torch_ops {
        let every = config.torch_op_every.max(2);
        let steps = config.torch_op_steps.clamp(1, every);
        (u64::from(every) << 32) | u64::from(steps)
    } else {
        0
    };
    SCHEDULE.store(schedule, Ordering::Relaxed);
}

/// The last schedule published: `every << 32 | steps`, or 0.
pub(crate) fn schedule() -> u64 {
    SCHEDULE.load(Ordering::Relaxed)
}
