//! The torch-op level in the agent: the schedule of the torch profiler's windows, which the
//! Python package runs (`VLLM_PROFILING_TORCH_OPS`), published where a step can read it with
//! one atomic load, and the windows it hands back, given to the calling thread's recorder.

use std::sync::atomic::{AtomicU64, Ordering};

use vllm_profiler_core::Result;

use crate::config::Config;
use crate::runtime;

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

/// The schedule while profiling is on: `every << 32 | steps`, or 0.
pub(crate) fn schedule() -> u64 {
    if runtime::is_enabled() {
        SCHEDULE.load(Ordering::Relaxed)
    } else {
        0
    }
}

/// Records one window (JSON, see `vllm_profiler_format::TorchOpWindowInput`) on the calling
/// thread's recorder, whose step handles it names.
pub(crate) fn record(json: &[u8]) -> Result<()> {
    runtime::with_recorder(|recorder| recorder.record_torch_op_window_json(json))
}
