//! The fixed pool of activity buffers and the two callbacks through which CUPTI takes and
//! returns them. The callbacks run on CUPTI's threads or the host's: they only move a
//! pointer through a channel and never block, allocate a record, or parse.
// The callbacks are C functions that write through CUPTI's pointers.
#![allow(unsafe_code)]

use std::alloc::{alloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};

use crate::layout::RECORD_ALIGNMENT;

/// One buffer: 1 MiB, about 3,800 launches (kernel, API and correlation records).
pub const BUFFER_SIZE: usize = 1 << 20;
/// At most this many buffers exist (16 MiB): past it CUPTI drops records and counts them.
pub const MAX_BUFFERS: usize = 16;

/// A buffer of the pool, by address (it moves between threads; only one side owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer(pub usize);

/// A buffer CUPTI handed back, with the bytes it filled.
#[derive(Debug, Clone, Copy)]
pub struct Filled {
    pub buffer: Buffer,
    pub valid_size: usize,
}

pub struct Pool {
    free_tx: Sender<Buffer>,
    free_rx: Receiver<Buffer>,
    filled_tx: Sender<Filled>,
    filled_rx: Receiver<Filled>,
    allocated: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// The process's pool (buffers are never freed: CUPTI may hold one at any time).
pub fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let (free_tx, free_rx) = crossbeam_channel::bounded(MAX_BUFFERS);
        let (filled_tx, filled_rx) = crossbeam_channel::bounded(MAX_BUFFERS);
        Pool {
            free_tx,
            free_rx,
            filled_tx,
            filled_rx,
            allocated: AtomicUsize::new(0),
        }
    })
}

impl Pool {
    /// A free buffer, or a new one while fewer than `MAX_BUFFERS` exist.
    fn take(&self) -> Option<Buffer> {
        if let Ok(buffer) = self.free_rx.try_recv() {
            return Some(buffer);
        }
        let claimed = self
            .allocated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BUFFERS).then_some(n + 1)
            });
        if claimed.is_err() {
            return None;
        }
        let layout = Layout::from_size_align(BUFFER_SIZE, RECORD_ALIGNMENT).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc(layout) };
        if ptr.is_null() {
            self.allocated.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Buffer(ptr as usize))
    }

    /// Gives a parsed buffer back for reuse.
    pub fn give_back(&self, buffer: Buffer) {
        // Never full: at most MAX_BUFFERS buffers exist.
        let _ = self.free_tx.try_send(buffer);
    }

    /// The buffers CUPTI has returned since the last call.
    pub fn filled(&self) -> &Receiver<Filled> {
        &self.filled_rx
    }

    pub fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Acquire)
    }
}

/// `CUpti_BuffersCallbackRequestFunc`: a free buffer of the pool, or none (CUPTI then drops
/// the records it had for it, and counts them).
///
/// # Safety
/// The pointers are CUPTI's: NULL or valid for writing.
pub unsafe extern "C" fn buffer_requested(
    buffer: *mut *mut u8,
    size: *mut usize,
    max_num_records: *mut usize,
) {
    let given = pool().take();
    if buffer.is_null() || size.is_null() {
        if let Some(b) = given {
            pool().give_back(b);
        }
        return;
    }
    // SAFETY: both checked non-NULL above; CUPTI passes them valid for writing.
    unsafe {
        *buffer = given.map_or(std::ptr::null_mut(), |b| b.0 as *mut u8);
        *size = if given.is_some() { BUFFER_SIZE } else { 0 };
    }
    if !max_num_records.is_null() {
        // SAFETY: checked non-NULL; 0 asks CUPTI to fill the buffer.
        unsafe { *max_num_records = 0 };
    }
}

/// `CUpti_BuffersCallbackCompleteFunc`: queues the buffer for the tracer's thread.
///
/// # Safety
/// `buffer` is NULL or one `buffer_requested` handed out, with `valid_size` bytes of records.
pub unsafe extern "C" fn buffer_completed(
    _context: *mut core::ffi::c_void,
    _stream_id: u32,
    buffer: *mut u8,
    _size: usize,
    valid_size: usize,
) {
    if buffer.is_null() {
        return;
    }
    let filled = Filled {
        buffer: Buffer(buffer as usize),
        valid_size: valid_size.min(BUFFER_SIZE),
    };
    // Never full: at most MAX_BUFFERS buffers exist.
    let _ = pool().filled_tx.try_send(filled);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_out_at_most_its_buffers_then_none_and_reuses_those_given_back() {
        let mut got = Vec::new();
        for _ in 0..MAX_BUFFERS {
            let (mut ptr, mut size, mut max) = (std::ptr::null_mut(), 0usize, 7usize);
            // SAFETY: valid out-pointers.
            unsafe { buffer_requested(&mut ptr, &mut size, &mut max) };
            assert!(!ptr.is_null());
            assert_eq!(
                (size, max, ptr as usize % RECORD_ALIGNMENT),
                (BUFFER_SIZE, 0, 0)
            );
            got.push(ptr);
        }
        let (mut ptr, mut size, mut max) = (std::ptr::null_mut(), 1usize, 0usize);
        // SAFETY: valid out-pointers.
        unsafe { buffer_requested(&mut ptr, &mut size, &mut max) };
        assert!(ptr.is_null());
        assert_eq!(size, 0);
        // SAFETY: a buffer of the pool.
        unsafe { buffer_completed(std::ptr::null_mut(), 0, got[3], BUFFER_SIZE, 4096) };
        let filled = pool().filled().try_recv().unwrap();
        assert_eq!(
            (filled.buffer.0, filled.valid_size),
            (got[3] as usize, 4096)
        );
        pool().give_back(filled.buffer);
        // SAFETY: valid out-pointers.
        unsafe { buffer_requested(&mut ptr, &mut size, &mut max) };
        assert_eq!(ptr, got[3]);
        assert_eq!(pool().allocated(), MAX_BUFFERS);
    }
}
