//! The recorder of vllm-profiler: per-thread step and span recording into lock-free rings, the
//! collector that turns them into totals and bounded histories, the sampler's parts, and the
//! exporters. Safe Rust only; the agent crate owns the C ABI, the globals and the threads.
#![forbid(unsafe_code)]

pub mod error;
pub mod export;
pub mod fork_closed;
pub mod history;
pub mod journal;
pub mod names;
pub mod recorder;
pub mod sampler;
pub mod session;
pub mod shapes;
pub mod trace;

pub use error::{ProfilerError, Result};
pub use recorder::ThreadRecorder;
pub use sampler::{
    process_memory_mb, DeviceBackend, DeviceReading, HostProbe, Sampler, CPU_DETECTOR,
};
pub use session::{recover, MetricsSnapshot, Recovered, Session, Settings, Turn};
