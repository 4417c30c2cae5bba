//! The GPM figures a step reports, looked up at export in the GPU history rather than carried
//! by the step's event, which stays one cache line: at the step's start and at its end, the
//! figures of the device steps read from in its newest sample at that moment. The device is
//! chosen as the sampler chose it live ([`format::primary_device`], tick by tick, sticky while
//! a device's own memory is unknown), so a step never takes another device's figures.
//!
//! A step older than every kept sample of its device gets none.

use vllm_profiler_format::{self as format, GpmFigures, GpuSample};

pub(crate) struct GpmTimeline<'a> {
    /// Per device, oldest sample first.
    devices: Vec<(u32, Vec<&'a GpuSample>)>,
    /// From each tick's timestamp on, the device steps read from; oldest first.
    chosen: Vec<(f64, u32)>,
}

impl<'a> GpmTimeline<'a> {
    /// The timeline of `samples`; empty, and answering nothing, when none has GPM figures.
    pub(crate) fn new(samples: &'a [GpuSample]) -> GpmTimeline<'a> {
        let mut timeline = GpmTimeline {
            devices: Vec::new(),
            chosen: Vec::new(),
        };
        if !samples.iter().any(|s| s.gpm().is_some()) {
            return timeline;
        }
        let mut in_order: Vec<&GpuSample> = samples.iter().collect();
        in_order.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        // The newest sample of each device as the ticks go by, as the sampler held them.
        let mut latest: Vec<&GpuSample> = Vec::new();
        let mut previous = None;
        for (i, sample) in in_order.iter().enumerate() {
            match timeline
                .devices
                .iter_mut()
                .find(|(id, _)| *id == sample.device_id)
            {
                Some((_, kept)) => kept.push(sample),
                None => timeline.devices.push((sample.device_id, vec![sample])),
            }
            // By device index, as the sampler holds them.
            match latest.binary_search_by_key(&sample.device_id, |s| s.device_id) {
                Ok(i) => latest[i] = sample,
                Err(i) => latest.insert(i, sample),
            }
            // A tick's samples share its timestamp: choose once all of them are in.
            let tick_ends = in_order
                .get(i + 1)
                .is_none_or(|next| next.timestamp != sample.timestamp);
            if tick_ends {
                if let Some(device) = format::primary_device(&latest, previous) {
                    previous = Some(device.device_id);
                    timeline.chosen.push((sample.timestamp, device.device_id));
                }
            }
        }
        timeline
    }

    /// The figures at `unix` seconds.
    pub(crate) fn at(&self, unix: f64) -> Option<GpmFigures> {
        let ticks = self.chosen.partition_point(|(t, _)| *t <= unix);
        let &(_, device) = self.chosen.get(ticks.checked_sub(1)?)?;
        let (_, kept) = self.devices.iter().find(|(id, _)| *id == device)?;
        let taken = kept.partition_point(|s| s.timestamp <= unix);
        kept.get(taken.checked_sub(1)?)?.gpm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        device_id: u32,
        timestamp: f64,
        own_mb: Option<f64>,
        active: Option<f64>,
    ) -> GpuSample {
        GpuSample {
            timestamp,
            device_id,
            process_memory_used_mb: own_mb,
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
            sample(0, 10.0, Some(0.0), Some(1.0)),
            sample(1, 10.0, Some(512.0), Some(11.0)),
            sample(0, 11.0, Some(0.0), Some(2.0)),
            sample(1, 11.0, Some(512.0), None),
            sample(0, 12.0, Some(0.0), Some(3.0)),
            sample(1, 12.0, Some(512.0), Some(13.0)),
        ];
        let timeline = GpmTimeline::new(&samples);
        assert_eq!(active(&timeline, 9.9), None, "before every sample");
        assert_eq!(active(&timeline, 10.0), Some(11.0));
        assert_eq!(active(&timeline, 10.5), Some(11.0));
        assert_eq!(timeline.at(11.2), None, "device 1 gave no GPM then");
        assert_eq!(active(&timeline, 99.0), Some(13.0));
    }

    #[test]
    fn a_tick_whose_process_list_failed_keeps_the_device_not_the_first() {
        // Device 1 holds this process's memory; at 11 its process list failed (unknown).
        let samples = [
            sample(0, 10.0, Some(0.0), Some(99.0)),
            sample(1, 10.0, Some(512.0), Some(1.0)),
            sample(0, 11.0, Some(0.0), Some(99.0)),
            sample(1, 11.0, None, Some(2.0)),
        ];
        let timeline = GpmTimeline::new(&samples);
        assert_eq!(active(&timeline, 10.5), Some(1.0));
        assert_eq!(active(&timeline, 11.5), Some(2.0));
    }

    #[test]
    fn without_gpm_figures_nothing_is_indexed() {
        let samples = [
            sample(0, 1.0, Some(5.0), None),
            sample(0, 2.0, Some(5.0), None),
        ];
        let timeline = GpmTimeline::new(&samples);
        assert!(timeline.devices.is_empty() && timeline.chosen.is_empty());
        assert_eq!(timeline.at(1.5), None);
    }
}
