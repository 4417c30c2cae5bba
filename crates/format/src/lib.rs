//! The schema of every file vllm-profiler exports.
//!
//! This crate is the single definition of the report formats: the agent writes these types and
//! the CLI reads them. It does no I/O. Field names marked "seed 004" are part of the external
//! contract in SPEC.md and never change; everything else may grow, and readers must ignore fields
//! they do not know (serde does by default).
#![forbid(unsafe_code)]

mod gpu;
mod report;
pub mod shared_frame;
mod steps;
mod summary;
mod trace;
mod units;

// The types keep their paths at the crate root, where every reader and writer names them.
pub use gpu::*;
pub use report::*;
pub use shared_frame::SharedDeviceSample;
pub use steps::*;
pub use summary::*;
pub use trace::*;
pub use units::*;

/// Bumped whenever a field changes meaning or is removed. Adding a field does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the performance summary written by process `pid`.
pub fn summary_file_name(pid: u32) -> String {
    format!("performance_summary_{pid}.json")
}

/// File name of the GPU (and host) sample history written by process `pid`.
pub fn gpu_history_file_name(pid: u32) -> String {
    format!("gpu_history_{pid}.json")
}

/// File name of the detailed per-step records written by process `pid`.
pub fn detailed_steps_file_name(pid: u32) -> String {
    format!("detailed_steps_{pid}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_pid() {
        assert_eq!(summary_file_name(42), "performance_summary_42.json");
        assert_eq!(gpu_history_file_name(7), "gpu_history_7.json");
        assert_eq!(detailed_steps_file_name(9), "detailed_steps_9.json");
    }
}
