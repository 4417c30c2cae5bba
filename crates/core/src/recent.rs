//! The spans and steps a recording thread ended last, by sequence number: what a device
//! duration that arrives after its span or step ended (`ThreadRecorder::span_set_gpu_duration`)
//! needs to name it. Fixed rings, allocated at the first end; an entry is overwritten
//! `capacity` ends later, and taken when its duration is set, so that a second set is refused.

use crate::names::NameId;

/// Spans remembered per thread: a model's forward of a few hundred hooked modules, several
/// times over, so that durations resolved one step late still find their spans.
pub(crate) const SPANS: usize = 4096;
/// Steps remembered per thread: durations come a step or two late.
pub(crate) const STEPS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// 0 for an empty or taken entry: sequence numbers start at 1.
    seq: u64,
    name: NameId,
    step_seq: u64,
}

pub(crate) struct Recent {
    capacity: usize,
    ring: Vec<Entry>,
}

impl Recent {
    pub(crate) const fn new(capacity: usize) -> Recent {
        Recent {
            capacity,
            ring: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, seq: u64, name: NameId, step_seq: u64) {
        if self.ring.is_empty() {
            self.allocate();
        }
        self.ring[seq as usize % self.capacity] = Entry {
            seq,
            name,
            step_seq,
        };
    }

    #[cold]
    fn allocate(&mut self) {
        let empty = Entry {
            seq: 0,
            name: NameId::NONE,
            step_seq: 0,
        };
        self.ring = vec![empty; self.capacity];
    }

    /// The (name, step) of ended `seq`, if it is still remembered and not taken; takes it.
    pub(crate) fn take(&mut self, seq: u64) -> Option<(NameId, u64)> {
        let entry = self.ring.get_mut(seq as usize % self.capacity)?;
        if entry.seq != seq || seq == 0 {
            return None;
        }
        entry.seq = 0;
        Some((entry.name, entry.step_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_taken_once_until_capacity_ends_later() {
        let mut recent = Recent::new(SPANS);
        assert_eq!(recent.take(1), None);
        recent.record(1, NameId(7), 3);
        recent.record(2, NameId(8), 3);
        assert_eq!(recent.take(1), Some((NameId(7), 3)));
        assert_eq!(recent.take(1), None, "taken");
        assert_eq!(recent.take(2 + SPANS as u64), None);
        recent.record(2 + SPANS as u64, NameId(9), 4);
        assert_eq!(recent.take(2), None, "overwritten");
        assert_eq!(recent.take(0), None);
    }
}
