//! The external correlation id a recording thread pushes to CUPTI while it has a step or span
//! open, and what the collector reads back from a kernel record that carries it: the launching
//! thread, its innermost step and its innermost span's name, in one `u64`, so that a kernel is
//! attributed without a lookup table of open spans.
//!
//! `thread (22 bits) | span name (17) | step key (25)`. Linux thread ids are below 2^22
//! (`PID_MAX_LIMIT`); span names below `MAX_NAMES` (2^16). A step's key is its sequence number
//! folded to 25 bits, never 0: the collector looks it up among that thread's newest steps only,
//! where keys do not repeat.

use crate::names::NameId;

const THREAD_BITS: u32 = 22;
const SPAN_BITS: u32 = 17;
const STEP_BITS: u32 = 25;
const STEP_MASK: u64 = (1 << STEP_BITS) - 1;
const SPAN_MASK: u64 = (1 << SPAN_BITS) - 1;
const THREAD_MASK: u64 = (1 << THREAD_BITS) - 1;
const SPAN_SHIFT: u32 = STEP_BITS;
const THREAD_SHIFT: u32 = STEP_BITS + SPAN_BITS;
/// The span field of a context with no span open.
const NO_SPAN: u64 = SPAN_MASK;

/// A step's key: its sequence number folded into `1..2^25`.
#[inline]
pub fn step_key(step_seq: u64) -> u32 {
    (step_seq % STEP_MASK + 1) as u32
}

/// The id of the context (thread, innermost step, innermost span) a launch is made in.
/// `step_seq` 0 is no step; `span` `NameId::NONE` is no span. Never 0 (thread ids are not).
#[inline]
pub fn encode(thread_id: u32, step_seq: u64, span: NameId) -> u64 {
    let step = if step_seq == 0 {
        0
    } else {
        u64::from(step_key(step_seq))
    };
    let span = if span == NameId::NONE || u64::from(span.0) >= NO_SPAN {
        NO_SPAN
    } else {
        u64::from(span.0)
    };
    ((u64::from(thread_id) & THREAD_MASK) << THREAD_SHIFT) | (span << SPAN_SHIFT) | step
}

/// What a kernel record's external id says of its launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub thread_id: u32,
    /// 0: launched outside every step.
    pub step_key: u32,
    pub span: NameId,
}

impl Context {
    /// A launch made where nothing was open (or that carried no id).
    pub const NONE: Context = Context {
        thread_id: 0,
        step_key: 0,
        span: NameId::NONE,
    };
}

/// Reads an id back; 0 (no id) is no context.
#[inline]
pub fn decode(id: u64) -> Context {
    if id == 0 {
        return Context::NONE;
    }
    let span = (id >> SPAN_SHIFT) & SPAN_MASK;
    Context {
        thread_id: ((id >> THREAD_SHIFT) & THREAD_MASK) as u32,
        step_key: (id & STEP_MASK) as u32,
        span: if span == NO_SPAN {
            NameId::NONE
        } else {
            NameId(span as u32)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_its_context() {
        let id = encode(4_194_303, 7, NameId(65_535));
        assert_eq!(
            decode(id),
            Context {
                thread_id: 4_194_303,
                step_key: 8,
                span: NameId(65_535)
            }
        );
        let outside = decode(encode(12, 0, NameId::NONE));
        assert_eq!(
            (outside.thread_id, outside.step_key, outside.span),
            (12, 0, NameId::NONE)
        );
        assert_eq!(decode(0), Context::NONE);
    }

    #[test]
    fn step_keys_are_never_zero_and_differ_for_neighbours() {
        assert_eq!(step_key(STEP_MASK), 1);
        assert_eq!(step_key(STEP_MASK - 1), STEP_MASK as u32);
        assert_ne!(step_key(1 << 25), 0);
        assert_ne!(step_key(41), step_key(42));
    }
}
