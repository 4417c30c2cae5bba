//! The handle a begin call gives out and its end call gives back, as one `u64` across the C
//! ABI: `generation (8 bits) | thread slot (20) | sequence (36)`. A handle from before a fork,
//! from another session or from another live thread is never mistaken for one of this
//! thread's: its owner bits differ (slots are reused only after their thread exits).

const SEQ_BITS: u32 = 36;
const SLOT_BITS: u32 = 20;
const GENERATION_BITS: u32 = 8;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;
const SLOT_SHIFT: u32 = SEQ_BITS;
const GENERATION_SHIFT: u32 = SEQ_BITS + SLOT_BITS;

/// A step or span handle; 0 is never one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(u64);

/// The owner bits of a handle: the session's generation and the thread's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(u64);

impl Owner {
    /// The owner of the handles of thread `slot` in the session of `generation` (both kept to
    /// their low bits: past 2^20 live threads, slots repeat).
    pub fn new(generation: u64, slot: u32) -> Owner {
        Owner(
            ((generation & GENERATION_MASK) << GENERATION_SHIFT)
                | ((u64::from(slot) & SLOT_MASK) << SLOT_SHIFT),
        )
    }

    /// The handle of sequence number `seq` (kept to its low 36 bits) of this owner.
    #[inline]
    pub fn handle(self, seq: u64) -> Handle {
        Handle(self.0 | (seq & SEQ_MASK))
    }

    /// The sequence number `handle` names, if this owner gave it out (and it is not 0).
    #[inline]
    pub fn seq_of(self, handle: Handle) -> Option<u64> {
        let seq = handle.0 & SEQ_MASK;
        (handle.0 & !SEQ_MASK == self.0 && seq != 0).then_some(seq)
    }
}

impl Handle {
    /// A handle as the C ABI carries it.
    #[inline]
    pub fn from_raw(raw: u64) -> Handle {
        Handle(raw)
    }

    #[inline]
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// The sequence number after `seq`: 36 bits, wrapping past 0 (0 is no handle's).
#[inline]
pub fn next_seq(seq: u64) -> u64 {
    match (seq + 1) & SEQ_MASK {
        0 => 1,
        next => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_known_only_to_its_owner() {
        let owner = Owner::new(3, 7);
        let handle = owner.handle(42);
        assert_eq!(handle.raw(), (3 << 56) | (7 << 36) | 42);
        assert_eq!(owner.seq_of(handle), Some(42));
        assert_eq!(Owner::new(4, 7).seq_of(handle), None, "another generation");
        assert_eq!(Owner::new(3, 8).seq_of(handle), None, "another thread");
        assert_eq!(
            owner.seq_of(owner.handle(0)),
            None,
            "sequence 0 is no handle"
        );
        assert_eq!(Owner::new(256 + 3, 7), owner, "8 bits of generation");
    }

    #[test]
    fn sequence_numbers_wrap_past_zero() {
        assert_eq!(next_seq(0), 1);
        assert_eq!(next_seq(SEQ_MASK - 1), SEQ_MASK);
        assert_eq!(next_seq(SEQ_MASK), 1);
    }
}
