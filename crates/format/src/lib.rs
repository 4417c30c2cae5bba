//! The schema of every file vllm-profiler exports.
//!
//! This crate is the single definition of the report formats: the agent writes these types and
//! the CLI reads them. It does no I/O. Field names marked "seed 004" are the ones vLLM's
//! profiling design names, the external contract: they never change. Everything else may grow,
//! and readers must ignore fields they do not know (serde does by default).
#![forbid(unsafe_code)]

mod files;
mod gpu;
mod metrics;
mod report;
pub mod shared_frame;
mod steps;
mod summary;
mod torch_ops;
mod trace;
mod units;

// The types keep their paths at the crate root, where every reader and writer names them.
pub use files::*;
pub use gpu::*;
pub use metrics::*;
pub use report::*;
pub use shared_frame::SharedDeviceSample;
pub use steps::*;
pub use summary::*;
pub use torch_ops::*;
pub use trace::*;
pub use units::*;

/// Bumped whenever a field changes meaning or is removed. Adding a field does not bump it.
pub const SCHEMA_VERSION: u32 = 1;
