//! The sample store: what the sampler measured, the host's and each device's, in bounded
//! histories, and the feed of ticks the journal has not written yet.

use vllm_profiler_format as format;

use crate::history::Bounded;
use crate::kept::FEED_LIMIT;

pub(crate) struct SampleStore {
    /// `None` until the sampler's first tick.
    pub(crate) detector: Option<&'static str>,
    pub(crate) described_devices: Vec<format::GpuDevice>,
    pub(crate) host: Bounded<format::HostSample>,
    /// One history per sampled device, in the order the backend reports them.
    pub(crate) devices: Vec<(u32, Bounded<format::GpuSample>)>,
    /// What the journal has not written yet (kept only while it is open).
    pub(crate) feed: SampleFeed,
}

#[derive(Default)]
pub(crate) struct SampleFeed {
    pub(crate) active: bool,
    /// One entry per tick: the host sample and the devices' samples.
    pub(crate) ticks: Vec<(format::HostSample, Vec<format::GpuSample>)>,
    pub(crate) devices_changed: bool,
    pub(crate) overflowed: bool,
}

impl SampleStore {
    pub(crate) fn new(max_history: usize) -> SampleStore {
        SampleStore {
            detector: None,
            described_devices: Vec::new(),
            host: Bounded::new(max_history),
            devices: Vec::new(),
            feed: SampleFeed::default(),
        }
    }

    /// Samples let go by every history, host and devices.
    pub(crate) fn dropped(&self) -> u64 {
        self.devices
            .iter()
            .fold(self.host.dropped(), |sum, (_, h)| {
                sum.saturating_add(h.dropped())
            })
    }

    /// Whether no sample was ever kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.host.is_empty() && self.devices.iter().all(|(_, h)| h.is_empty())
    }

    pub(crate) fn set_capacity(&mut self, max_history: usize) {
        self.host.set_capacity(max_history);
        for (_, h) in &mut self.devices {
            h.set_capacity(max_history);
        }
    }

    /// Records which detector answered and the devices it found.
    pub(crate) fn describe(&mut self, detector: &'static str, devices: Vec<format::GpuDevice>) {
        self.detector = Some(detector);
        self.described_devices = devices;
        self.feed.devices_changed = self.feed.active;
    }

    /// Adds one tick: the host's sample, and each device's into its history (a device seen
    /// for the first time gets one of `max_history`).
    pub(crate) fn record(
        &mut self,
        host: format::HostSample,
        devices: &[format::GpuSample],
        max_history: usize,
    ) {
        if self.feed.active {
            if self.feed.ticks.len() < FEED_LIMIT {
                self.feed.ticks.push((host.clone(), devices.to_vec()));
            } else {
                self.feed.ticks.clear();
                self.feed.overflowed = true;
            }
        }
        self.host.push(host);
        for sample in devices {
            let position = self
                .devices
                .iter()
                .position(|(id, _)| *id == sample.device_id);
            let history = match position {
                Some(i) => &mut self.devices[i].1,
                None => {
                    self.devices
                        .push((sample.device_id, Bounded::new(max_history)));
                    &mut self.devices.last_mut().expect("just pushed").1
                }
            };
            history.push(sample.clone());
        }
    }
}
