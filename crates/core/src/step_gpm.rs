//! The GPM figures a step reports, looked up at export in the GPU history rather than carried
//! by the step's event, which stays one cache line: at the step's start and at its end, the
//! figures of the device steps read from ([`format::primary_device`]) in its newest sample at
//! that moment, as the step's utilization is read live.
//!
//! A step older than every kept sample of its device gets none.

use vllm_profiler_format::{self as format, GpmFigures, GpuSample};

pub(crate) struct GpmTimeline<'a> {
    /// Per device, in the order devices first appear (the backend's), oldest sample first.
    devices: Vec<(u32, Vec<&'a GpuSample>)>,
}

impl<'a> GpmTimeline<'a> {
    /// The timeline of `samples`; empty, and answering nothing, when none has GPM figures.
    pub(crate) fn new(samples: &'a [GpuSample]) -> GpmTimeline<'a> {
        let mut devices: Vec<(u32, Vec<&'a GpuSample>)> = Vec::new();
        if samples.iter().any(|s| s.gpm().is_some()) {
            for sample in samples {
                match devices.iter_mut().find(|(id, _)| *id == sample.device_id) {
                    Some((_, kept)) => kept.push(sample),
                    None => devices.push((sample.device_id, vec![sample])),
                }
            }
            for (_, kept) in &mut devices {
                kept.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
            }
        }
        GpmTimeline { devices }
    }

    /// The figures at `unix` seconds.
    pub(crate) fn at(&self, unix: f64) -> Option<GpmFigures> {
        if self.devices.is_empty() {
            return None;
        }
        let newest: Vec<&GpuSample> = (self.devices.iter())
            .filter_map(|(_, kept)| {
                let taken = kept.partition_point(|s| s.timestamp <= unix);
                kept.get(taken.checked_sub(1)?).copied()
            })
            .collect();
        format::primary_device(&newest)?.gpm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(device_id: u32, timestamp: f64, own_mb: f64, active: Option<f64>) -> GpuSample {
        GpuSample {
            timestamp,
            device_id,
            process_memory_used_mb: Some(own_mb),
            sm_active_percent: active,
            ..GpuSample::default()
        }
    }

    fn active(timeline: &GpmTimeline, unix: f64) -> Option<f64> {
        timeline.at(unix).and_then(|g| g.sm_active_percent)
    }

    #[test]
    fn a_moment_gets_the_newest_sample_of_the_device_holding_this_process_memory() {
        let samples = [
            sample(0, 10.0, 0.0, Some(1.0)),
            sample(1, 10.0, 512.0, Some(11.0)),
            sample(0, 11.0, 0.0, Some(2.0)),
            sample(1, 11.0, 512.0, None),
            sample(0, 12.0, 0.0, Some(3.0)),
            sample(1, 12.0, 512.0, Some(13.0)),
        ];
        let timeline = GpmTimeline::new(&samples);
        assert_eq!(active(&timeline, 9.9), None, "before every sample");
        assert_eq!(active(&timeline, 10.0), Some(11.0));
        assert_eq!(active(&timeline, 10.5), Some(11.0));
        assert_eq!(timeline.at(11.2), None, "device 1 gave no GPM then");
        assert_eq!(active(&timeline, 99.0), Some(13.0));
    }

    #[test]
    fn without_gpm_figures_nothing_is_indexed() {
        let samples = [sample(0, 1.0, 5.0, None), sample(0, 2.0, 5.0, None)];
        let timeline = GpmTimeline::new(&samples);
        assert!(timeline.devices.is_empty());
        assert_eq!(timeline.at(1.5), None);
    }
}
