//! What each backend does when a metric cannot be read, in one place:
//! - the library lacks the function: `null` for good on every device, one warning;
//! - the device does not support it: `null` for good on that device, silently;
//! - the call failed this time: `null` for this sample, one warning per metric, asked again
//!   next sample;
//! - the device is lost (fell off the bus): `null` for every metric of that device, one
//!   warning; each later sample asks only its first metric (utilization), and when that
//!   answers again the device is back, with one more line.
//!
//! Metrics found unavailable for good are not asked again, which keeps a sample cheap.

/// A metric a backend reads, named by the report field it fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    Utilization,
    Memory,
    Temperature,
    Power,
    PowerLimit,
    SmClock,
    MemoryClock,
    ProcessMemory,
    Gpm,
}

impl Metric {
    fn bit(self) -> u32 {
        1 << self as u32
    }

    fn fields(self) -> &'static str {
        match self {
            Metric::Utilization => "gpu_utilization and memory_controller_utilization",
            Metric::Memory => "memory_used_mb, memory_total_mb and memory_utilization",
            Metric::Temperature => "temperature",
            Metric::Power => "power_draw",
            Metric::PowerLimit => "power_limit",
            Metric::SmClock => "sm_clock_mhz",
            Metric::MemoryClock => "memory_clock_mhz",
            Metric::ProcessMemory => "process_memory_used_mb",
            Metric::Gpm => {
                "sm_active_percent, sm_occupancy_percent, tensor_active_percent and \
                 dram_bandwidth_percent"
            }
        }
    }
}

/// Why a read gave nothing.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The loaded library has no such function.
    MissingSymbol(String),
    /// The device cannot give this metric.
    NotSupported,
    /// The call failed this time.
    Failed(String),
    /// The device is gone (NVML's `GPU_IS_LOST`): no call to it will answer until it is back.
    Lost(String),
}

/// `pub` only because the `Reader` trait names it; nothing outside the crate can make one.
pub struct Health {
    library: &'static str,
    /// Metrics the library cannot give at all.
    missing: u32,
    /// Per device position: metrics it does not support (grows as devices are read).
    unsupported: Vec<u32>,
    /// Metrics whose failure was already reported.
    warned: u32,
    /// Per device position: lost (see the module comment).
    lost: Vec<bool>,
    pending: Vec<String>,
}

impl Health {
    pub(crate) fn new(library: &'static str) -> Self {
        Health {
            library,
            missing: 0,
            unsupported: Vec::new(),
            warned: 0,
            lost: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn is_lost(&self, position: usize) -> bool {
        self.lost.get(position).copied().unwrap_or(false)
    }

    /// Whether `metric` is still worth asking device `position` for. A lost device is asked
    /// only for utilization, the first read of every sample, to see whether it is back.
    pub(crate) fn wanted(&self, position: usize, metric: Metric) -> bool {
        if self.is_lost(position) && metric != Metric::Utilization {
            return false;
        }
        let known_bad = self.missing | self.unsupported.get(position).copied().unwrap_or(0);
        known_bad & metric.bit() == 0
    }

    fn set_lost(&mut self, position: usize, lost: bool) {
        if self.lost.len() <= position {
            self.lost.resize(position + 1, false);
        }
        self.lost[position] = lost;
    }

    /// Reads `metric` of device `position` (its vendor index is `index`) unless it is known
    /// to be unavailable; a failure gives `None` and is handled as the module says.
    pub(crate) fn read<T>(
        &mut self,
        position: usize,
        index: u32,
        metric: Metric,
        call: impl FnOnce() -> Result<T, Failure>,
    ) -> Option<T> {
        if !self.wanted(position, metric) {
            return None;
        }
        match call() {
            Ok(value) => {
                if self.is_lost(position) {
                    self.set_lost(position, false);
                    self.pending.push(format!(
                        "{} answers for device {index} again: sampling it resumes",
                        self.library
                    ));
                }
                Some(value)
            }
            Err(Failure::Lost(detail)) => {
                if !self.is_lost(position) {
                    self.set_lost(position, true);
                    self.pending.push(format!(
                        "{} lost device {index} ({detail}): its metrics are null until it \
                         answers again",
                        self.library
                    ));
                }
                None
            }
            Err(Failure::MissingSymbol(detail)) => {
                self.missing |= metric.bit();
                let library = self.library;
                self.warn_once(metric, || {
                    format!(
                        "the loaded {library} library lacks a function: {} will be null \
                         ({detail})",
                        metric.fields()
                    )
                });
                None
            }
            Err(Failure::NotSupported) => {
                if self.unsupported.len() <= position {
                    self.unsupported.resize(position + 1, 0);
                }
                self.unsupported[position] |= metric.bit();
                None
            }
            Err(Failure::Failed(detail)) => {
                let library = self.library;
                self.warn_once(metric, || {
                    format!(
                        "{library} could not read {} of device {index} ({detail}): null in that \
                         sample, sampling goes on (reported once)",
                        metric.fields()
                    )
                });
                None
            }
        }
    }

    fn warn_once(&mut self, metric: Metric, message: impl FnOnce() -> String) {
        if self.warned & metric.bit() == 0 {
            self.warned |= metric.bit();
            self.pending.push(message());
        }
    }

    /// A message not tied to a metric.
    pub(crate) fn warn(&mut self, message: String) {
        self.pending.push(message);
    }

    pub(crate) fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(
        health: &mut Health,
        position: usize,
        metric: Metric,
        result: Result<u32, Failure>,
    ) -> (Option<u32>, bool) {
        let mut called = false;
        let value = health.read(position, position as u32, metric, || {
            called = true;
            result
        });
        (value, called)
    }

    #[test]
    fn a_missing_function_is_null_for_good_on_every_device_with_one_warning() {
        let mut health = Health::new("NVML");
        let missing = || Err(Failure::MissingSymbol("undefined symbol: nvmlX".into()));
        assert_eq!(
            calls(&mut health, 0, Metric::Power, missing()),
            (None, true)
        );
        // Not asked again, on this device or the other.
        assert_eq!(calls(&mut health, 0, Metric::Power, Ok(5)), (None, false));
        assert_eq!(calls(&mut health, 1, Metric::Power, Ok(5)), (None, false));
        // Other metrics are untouched.
        assert_eq!(
            calls(&mut health, 1, Metric::Temperature, Ok(40)),
            (Some(40), true)
        );
        let warnings = health.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("power_draw will be null"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("nvmlX"));
        assert!(health.take_warnings().is_empty());
    }

    #[test]
    fn not_supported_is_null_for_good_on_that_device_only_and_silent() {
        let mut health = Health::new("NVML");
        assert_eq!(
            calls(&mut health, 0, Metric::SmClock, Err(Failure::NotSupported)),
            (None, true)
        );
        assert_eq!(
            calls(&mut health, 0, Metric::SmClock, Ok(1500)),
            (None, false)
        );
        assert_eq!(
            calls(&mut health, 1, Metric::SmClock, Ok(1500)),
            (Some(1500), true)
        );
        assert!(health.take_warnings().is_empty());
    }

    #[test]
    fn a_lost_device_is_said_once_asked_only_for_utilization_and_comes_back() {
        let mut health = Health::new("NVML");
        let lost = || Err(Failure::Lost("GPU is lost".into()));
        assert_eq!(
            calls(&mut health, 1, Metric::Utilization, lost()),
            (None, true)
        );
        // The rest of the sample, and of the next ones, is not asked.
        assert_eq!(calls(&mut health, 1, Metric::Power, Ok(5)), (None, false));
        assert_eq!(
            calls(&mut health, 1, Metric::Utilization, lost()),
            (None, true)
        );
        assert_eq!(calls(&mut health, 1, Metric::Memory, Ok(5)), (None, false));
        // Another device is untouched.
        assert_eq!(calls(&mut health, 0, Metric::Power, Ok(7)), (Some(7), true));
        let warnings = health.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("lost device 1"), "{}", warnings[0]);
        // Back: every metric is asked again, with one line.
        assert_eq!(
            calls(&mut health, 1, Metric::Utilization, Ok(9)),
            (Some(9), true)
        );
        assert_eq!(calls(&mut health, 1, Metric::Power, Ok(5)), (Some(5), true));
        let warnings = health.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("device 1 again"), "{}", warnings[0]);
    }

    #[test]
    fn a_failed_call_is_null_for_that_sample_only_and_reported_once() {
        let mut health = Health::new("amd-smi");
        let failed = || Err(Failure::Failed("status 7".into()));
        assert_eq!(
            calls(&mut health, 0, Metric::Memory, failed()),
            (None, true)
        );
        assert_eq!(
            calls(&mut health, 0, Metric::Memory, Ok(9)),
            (Some(9), true)
        );
        assert_eq!(
            calls(&mut health, 0, Metric::Memory, failed()),
            (None, true)
        );
        let warnings = health.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("amd-smi could not read memory_used_mb"));
        assert!(warnings[0].contains("device 0") && warnings[0].contains("status 7"));
    }
}
