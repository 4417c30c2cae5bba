//! The buffer protocol, as real CUPTI runs it: records go into the "current" buffer, got from
//! the client's BufferRequested callback on the thread that writes; a buffer the next record
//! does not fit in is completed (queued); `cuptiActivityFlushAll` hands the completed ones (and,
//! forced, the partial current one) to BufferCompleted on the flushing thread. A refused buffer
//! drops the record that asked for it, and the next record asks again.
//!
//! No client callback runs under the state lock: a BufferCompleted that reads its records and
//! the dropped count, or a BufferRequested that asks anything of the library, cannot deadlock.
//! (A BufferRequested that itself writes records, i.e. calls `fake_cupti_launch`, would wait on
//! the request lock forever; real CUPTI makes no promise for that either.)
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ptr;

use parking_lot::Mutex;
use vllm_profiler_cupti::layout::{
    ActivityKernel9, BufferCompletedFn, BufferRequestedFn, RECORD_ALIGNMENT,
};

/// A buffer the client lent us.
struct Buffer {
    ptr: *mut u8,
    size: usize,
    /// Bytes holding records, from the start.
    used: usize,
    records: usize,
    /// The client's cap on records in this buffer; 0 for none.
    max_records: usize,
}

// SAFETY: the buffer is the client's memory lent to the library until BufferCompleted; only
// the state lock reaches it, so moving the pointer between threads shares nothing unguarded.
unsafe impl Send for Buffer {}

impl Buffer {
    fn fits(&self, size: usize) -> bool {
        self.used + size <= self.size && (self.max_records == 0 || self.records < self.max_records)
    }

    /// Copies `record` to the end of the records.
    ///
    /// # Safety
    /// `record` must be valid for `size` bytes, and `self.fits(size)`.
    unsafe fn push(&mut self, record: *const u8, size: usize) {
        // SAFETY: the buffer holds `self.size` bytes (the client's word when it lent it), and
        // `fits` keeps `used + size` within them; the record is not inside the buffer.
        unsafe { ptr::copy_nonoverlapping(record, self.ptr.add(self.used), size) };
        self.used += size.next_multiple_of(RECORD_ALIGNMENT);
        self.records += 1;
    }
}

struct State {
    callbacks: Option<(BufferRequestedFn, BufferCompletedFn)>,
    current: Option<Buffer>,
    completed: VecDeque<Buffer>,
    dropped: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    callbacks: None,
    current: None,
    completed: VecDeque::new(),
    dropped: 0,
});

/// Held while a buffer is requested, so that one thread asks at a time and the others, once
/// it is in, write into the buffer it got. Never held by a reader of the state.
static REQUESTING: Mutex<()> = Mutex::new(());

/// The smallest buffer taken: one kernel record, the largest the library writes.
pub const MIN_BUFFER_SIZE: usize = size_of::<ActivityKernel9>();

pub fn register(requested: BufferRequestedFn, completed: BufferCompletedFn) {
    STATE.lock().callbacks = Some((requested, completed));
}

/// Returns the count of records dropped since the last call, and starts it again.
pub fn take_dropped() -> usize {
    std::mem::take(&mut STATE.lock().dropped)
}

/// Whether the record was written, dropped, or not produced at all (no callbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Yes,
    Dropped,
    NoCallbacks,
}

/// Writes `record` (a record struct of the layout, whose first field is its kind) into the
/// current buffer, asking the client for one when there is none or it is full.
pub fn write<T: Copy>(record: &T) -> Written {
    let size = size_of::<T>();
    debug_assert!(size <= MIN_BUFFER_SIZE);
    let bytes = (record as *const T).cast::<u8>();
    {
        let mut state = STATE.lock();
        if state.callbacks.is_none() {
            return Written::NoCallbacks;
        }
        if let Some(current) = state.current.as_mut().filter(|c| c.fits(size)) {
            // SAFETY: `bytes` is `record`, `size` bytes; it fits.
            unsafe { current.push(bytes, size) };
            return Written::Yes;
        }
    }
    let _requesting = REQUESTING.lock();
    let requested = {
        let mut state = STATE.lock();
        let Some((requested, _)) = state.callbacks else {
            return Written::NoCallbacks;
        };
        // Another thread may have got a buffer while this one waited.
        if let Some(current) = state.current.as_mut().filter(|c| c.fits(size)) {
            // SAFETY: as above.
            unsafe { current.push(bytes, size) };
            return Written::Yes;
        }
        if let Some(full) = state.current.take() {
            state.completed.push_back(full);
        }
        requested
    };
    let (mut buffer, mut buffer_size, mut max_records) = (ptr::null_mut::<u8>(), 0usize, 0usize);
    // SAFETY: the client's BufferRequested, called as CUPTI calls it, with pointers to our
    // locals; no lock of the state is held, so it may call back into the library.
    unsafe { requested(&mut buffer, &mut buffer_size, &mut max_records) };
    let mut state = STATE.lock();
    let refused = buffer.is_null()
        || !(buffer as usize).is_multiple_of(RECORD_ALIGNMENT)
        || buffer_size < MIN_BUFFER_SIZE;
    if refused {
        state.dropped += 1;
        return Written::Dropped;
    }
    let mut current = Buffer {
        ptr: buffer,
        size: buffer_size,
        used: 0,
        records: 0,
        max_records,
    };
    // SAFETY: as above; an empty buffer of MIN_BUFFER_SIZE or more fits any record we write.
    unsafe { current.push(bytes, size) };
    state.current = Some(current);
    Written::Yes
}

/// Hands the completed buffers (and with `forced` the current one, if it holds a record) to
/// BufferCompleted, on this thread. `false` when no callbacks are registered.
pub fn flush(forced: bool) -> bool {
    let (delivery, completed) = {
        let mut state = STATE.lock();
        let Some((_, completed)) = state.callbacks else {
            return false;
        };
        let mut delivery = std::mem::take(&mut state.completed);
        if forced && state.current.as_ref().is_some_and(|c| c.records > 0) {
            delivery.extend(state.current.take());
        }
        (delivery, completed)
    };
    for buffer in delivery {
        // SAFETY: the client's BufferCompleted, called as CUPTI calls it (no context, stream
        // 0) with a buffer it lent us and the bytes of records in it; no lock is held, so it
        // may read the records and the dropped count back through the library.
        unsafe { completed(ptr::null_mut(), 0, buffer.ptr, buffer.size, buffer.used) };
    }
    true
}
