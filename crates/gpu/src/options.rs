//! What detection is told (library paths, the devices to sample), and how many devices a
//! library found.

use std::path::PathBuf;

use crate::health;

/// What detection is told: library paths and which devices to sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// NVML to load instead of `libnvidia-ml.so.1` / `libnvidia-ml.so`.
    pub nvml_library: Option<PathBuf>,
    /// amd-smi to load instead of `libamd_smi.so`.
    pub amdsmi_library: Option<PathBuf>,
    /// Device indices to sample; `None` = all.
    pub devices: Option<Vec<u32>>,
}

impl Options {
    /// The indices to open among `count` devices; an unknown index is reported and skipped.
    pub(crate) fn selected(
        &self,
        count: u32,
        library: &str,
        health: &mut health::Health,
    ) -> Vec<u32> {
        match &self.devices {
            None => (0..count).collect(),
            Some(wanted) => {
                let mut chosen = Vec::new();
                for &index in wanted {
                    if index >= count {
                        health.warn(format!(
                            "VLLM_PROFILING_DEVICES names device {index}, but {library} has \
                             {count} device(s): ignored"
                        ));
                    } else if !chosen.contains(&index) {
                        chosen.push(index);
                    }
                }
                chosen
            }
        }
    }
}

/// How many devices the library reported, before `VLLM_PROFILING_DEVICES` selected some.
pub(crate) trait Found {
    fn found(&self) -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_selection_keeps_known_indices_once_and_reports_the_rest() {
        let mut health = health::Health::new("NVML");
        let all = Options::default();
        assert_eq!(all.selected(3, "NVML", &mut health), vec![0, 1, 2]);
        let some = Options {
            devices: Some(vec![2, 0, 2, 9]),
            ..Options::default()
        };
        assert_eq!(some.selected(3, "NVML", &mut health), vec![2, 0]);
        let warnings = health.take_warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("device 9") && warnings[0].contains("3 device(s)"));
    }
}
