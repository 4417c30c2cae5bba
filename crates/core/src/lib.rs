//! The session of vllm-profiler: per-thread step and span recording into lock-free rings (the
//! `recorder` feature), the collector that turns them into totals and bounded histories, the
//! report mapping, the export, and the crash-safe journal. Safe Rust only; the agent crate owns
//! the C ABI, the globals and the threads (the sampler's among them), the GPU crate the device
//! backends and the host probe.
#![forbid(unsafe_code)]

// The data path, in order: the recorder's events and handles, the session they go into, the
// collector, what it keeps, the report mapping, the export, and the files.
mod aggregates;
pub mod atomic_file;
mod clock;
mod collector;
mod counters;
mod event;
pub mod export;
#[cfg(feature = "recorder")]
mod handle;
pub mod history;
mod kept;
mod latest;
pub mod names;
#[cfg(feature = "recorder")]
mod recent;
#[cfg(feature = "recorder")]
pub mod recorder;
mod report;
mod report_kernels;
mod samples;
pub mod session;
pub mod shapes;
mod step_gpm;
pub mod trace;
mod trace_interval;
mod trace_kernels;
// The crash-safe journal beside it: its files, what it holds, the collector's writes, recovery.
pub mod journal;
mod journal_kernels;
mod journal_state;
mod journal_turn;
mod recover;
// The kernel level: the context a launch carries, and what is kept of kernels.
pub mod kernel_context;
pub mod kernel_inbox;
mod kernels;
// The torch-op level: what is kept of torch profiler windows, their report and trace.
mod report_torch_ops;
mod torch_ops;
mod trace_torch_ops;

pub mod error;

pub use clock::{Clock, ManualClock};
pub use counters::HotCounters;
pub use error::{ProfilerError, Result};
pub use journal_turn::Turn;
pub use latest::LatestMetrics;
#[cfg(feature = "recorder")]
pub use recorder::ThreadRecorder;
pub use recover::{recover, Recovered};
pub use session::{RunIdentity, Session, Settings};
