//! The recorder of vllm-profiler: per-thread step and span recording into lock-free rings, the
//! collector that turns them into totals and bounded histories, and the exporters. Safe Rust
//! only; the agent crate owns the C ABI, the globals and the threads (the sampler's among
//! them), the GPU crate the device backends and the host probe.
#![forbid(unsafe_code)]

pub mod error;
pub mod export;
pub mod history;
pub mod journal;
pub mod names;
pub mod recorder;
pub mod session;
pub mod shapes;
pub mod trace;

pub use error::{ProfilerError, Result};
pub use recorder::ThreadRecorder;
pub use session::{recover, MetricsSnapshot, Recovered, Session, Settings, Turn};
