//! The names of the report files: one of each per process, by its pid, and the way back from a
//! name to its pid.

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

/// File name of the Chrome trace event file (Perfetto, `chrome://tracing`) of process `pid`.
pub fn trace_file_name(pid: u32) -> String {
    format!("trace_{pid}.json")
}

/// The pid of a performance summary's file name, in the one spelling the agent writes
/// (`performance_summary_7.json`; `_007` or `_+7` are someone else's files).
pub fn summary_pid(file_name: &str) -> Option<u32> {
    let digits = file_name
        .strip_prefix("performance_summary_")?
        .strip_suffix(".json")?;
    let pid: u32 = digits.parse().ok()?;
    (pid.to_string() == digits).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_pid() {
        assert_eq!(summary_file_name(42), "performance_summary_42.json");
        assert_eq!(gpu_history_file_name(7), "gpu_history_7.json");
        assert_eq!(detailed_steps_file_name(9), "detailed_steps_9.json");
        assert_eq!(trace_file_name(3), "trace_3.json");
    }

    #[test]
    fn a_summary_s_pid_is_read_back_from_its_one_spelling() {
        assert_eq!(summary_pid(&summary_file_name(42)), Some(42));
        assert_eq!(summary_pid(&summary_file_name(u32::MAX)), Some(u32::MAX));
        for other in [
            "performance_summary_007.json",
            "performance_summary_+7.json",
            "performance_summary_.json",
            "performance_summary_7.json.tmp",
            "performance_summary_4294967296.json",
            "gpu_history_7.json",
        ] {
            assert_eq!(summary_pid(other), None, "{other}");
        }
    }
}
