//! GPM (GPU Performance Monitoring, Hopper and newer) through NVML: SM activity, SM occupancy,
//! tensor-core activity and DRAM bandwidth, which NVML computes between two samples of a
//! device. Each device keeps its previous sample; its first reading has no interval yet and
//! gives nothing.

use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::{gpm_metrics_get, GpmSample};
use nvml_wrapper::{Device, Nvml};
use vllm_profiler_format::GpmFigures;

/// The metrics read, in the order of [`figures`]' fields.
const METRICS: [GpmMetricId; 4] = [
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::DramBwUtil,
];

/// Whether `nvml` has every GPM function. Checked before a device takes a sample:
/// nvml-wrapper's `GpmSample` drop panics when the library lacks `nvmlGpmSampleFree`.
pub(crate) fn library_has_gpm(nvml: &Nvml) -> bool {
    let lib = nvml.lib();
    lib.nvmlGpmQueryDeviceSupport.is_ok()
        && lib.nvmlGpmSampleAlloc.is_ok()
        && lib.nvmlGpmSampleFree.is_ok()
        && lib.nvmlGpmSampleGet.is_ok()
        && lib.nvmlGpmMetricsGet.is_ok()
}

/// One device's GPM state.
pub(crate) struct Gpm {
    nvml: &'static Nvml,
    previous: Option<GpmSample<'static>>,
    /// Whether a sample was ever taken: "not supported" after that is a passing refusal (the
    /// counters held by another profiler), not the device's answer for good.
    answered: bool,
}

/// Above 100 by this much is rounding, and reads 100; further, or below 0, is no percentage
/// and reads null.
const PERCENT_SLACK: f64 = 1e-6;

impl Gpm {
    /// GPM for `device`, when the library and the device support it.
    pub(crate) fn open(nvml: &'static Nvml, device: &Device<'static>) -> Option<Gpm> {
        let supported = library_has_gpm(nvml) && device.gpm_support().unwrap_or(false);
        supported.then_some(Gpm {
            nvml,
            previous: None,
            answered: false,
        })
    }

    pub(crate) fn answered(&self) -> bool {
        self.answered
    }

    /// Drops the previous sample: the device was not read (lost, or not this process's to
    /// sample), so the next reading opens a new interval instead of one across the gap.
    pub(crate) fn forget(&mut self) {
        self.previous = None;
    }

    /// Takes a sample and gives the figures since the previous one: `Ok(None)` for the first.
    /// A metric the device cannot give is `None` in the figures.
    pub(crate) fn read(
        &mut self,
        device: &Device<'static>,
    ) -> Result<Option<GpmFigures>, NvmlError> {
        let current = device.gpm_sample()?;
        self.answered = true;
        let Some(previous) = self.previous.take() else {
            self.previous = Some(current);
            return Ok(None);
        };
        let results = gpm_metrics_get(self.nvml, &previous, &current, &METRICS);
        // The newest sample opens the next interval, whatever this one gave.
        self.previous = Some(current);
        let results = results?;
        let value = |i: usize| {
            results
                .get(i)
                .and_then(|r| r.as_ref().ok())
                .map(|m| m.value)
                .filter(|v| (0.0..=100.0 + PERCENT_SLACK).contains(v))
                .map(|v| v.min(100.0))
        };
        Ok(Some(figures([value(0), value(1), value(2), value(3)])))
    }
}

fn figures(values: [Option<f64>; 4]) -> GpmFigures {
    let [sm_active, sm_occupancy, tensor_active, dram_bandwidth] = values;
    GpmFigures {
        sm_active_percent: sm_active,
        sm_occupancy_percent: sm_occupancy,
        tensor_active_percent: tensor_active,
        dram_bandwidth_percent: dram_bandwidth,
    }
}
