//! What each backend does when a metric cannot be read, in one place:
//! - the library lacks the function: `null` for good on every device, one warning;
//! - the device does not support it: `null` for good on that device, silently;
//! - the call failed this time: `null` for this sample, one warning per metric, asked again
//!   next sample.
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
}

pub(crate) struct Health {
    library: &'static str,
    /// Metrics the library cannot give at all.
    missing: u32,
    /// Per device: metrics it does not support.
    unsupported: Vec<u32>,
    /// Metrics whose failure was already reported.
    warned: u32,
    pending: Vec<String>,
}

impl Health {
    pub(crate) fn new(library: &'static str, devices: usize) -> Self {
        Health {
            library,
            missing: 0,
            unsupported: vec![0; devices],
            warned: 0,
            pending: Vec::new(),
        }
    }

    /// Whether `metric` is still worth asking device `position` for.
    pub(crate) fn wanted(&self, position: usize, metric: Metric) -> bool {
        let known_bad = self.missing | self.unsupported.get(position).copied().unwrap_or(0);
        known_bad & metric.bit() == 0
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
            Ok(value) => Some(value),
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
                if let Some(bits) = self.unsupported.get_mut(position) {
                    *bits |= metric.bit();
                }
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
