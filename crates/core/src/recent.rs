//! The spans a recording thread ended last, by sequence number: what a device duration that
//! arrives after its span ended (`ThreadRecorder::span_set_gpu_duration`) needs to name its span.
//! A fixed ring, allocated at the first span end; an entry is overwritten `CAPACITY` spans later.

use crate::names::NameId;

/// Spans remembered per thread: a model's forward of a few hundred hooked modules, several
/// times over, so that durations resolved one step late still find their spans.
const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    name: NameId,
    step_seq: u64,
}

#[derive(Default)]
pub(crate) struct RecentSpans {
    ring: Vec<Entry>,
}

impl RecentSpans {
    #[inline]
    pub(crate) fn record(&mut self, seq: u64, name: NameId, step_seq: u64) {
        if self.ring.is_empty() {
            self.allocate();
        }
        self.ring[seq as usize % CAPACITY] = Entry {
            seq,
            name,
            step_seq,
        };
    }

    #[cold]
    fn allocate(&mut self) {
        let empty = Entry {
            seq: 0, // no span's: sequence numbers start at 1
            name: NameId::NONE,
            step_seq: 0,
        };
        self.ring = vec![empty; CAPACITY];
    }

    /// The (name, step) of ended span `seq`, if it is still remembered.
    pub(crate) fn find(&self, seq: u64) -> Option<(NameId, u64)> {
        let entry = self.ring.get(seq as usize % CAPACITY)?;
        (entry.seq == seq && seq != 0).then_some((entry.name, entry.step_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_found_until_capacity_spans_later() {
        let mut recent = RecentSpans::default();
        assert_eq!(recent.find(1), None);
        recent.record(1, NameId(7), 3);
        assert_eq!(recent.find(1), Some((NameId(7), 3)));
        assert_eq!(recent.find(1 + CAPACITY as u64), None);
        recent.record(1 + CAPACITY as u64, NameId(8), 4);
        assert_eq!(recent.find(1), None, "overwritten");
        assert_eq!(recent.find(0), None);
    }
}
