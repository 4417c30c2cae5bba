//! The CUPTI functions, with the real signatures and results (`cupti_activity.h`,
//! `cupti_callbacks.h`, `cupti_result.h`, `cupti_version.h` of 12.9.79).
//!
//! Exports never call each other, so that hiding one (`omit_symbols`) cannot break another.
#![allow(unsafe_code, non_snake_case, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use vllm_profiler_cupti::layout::{
    record_size, Activity, BufferCompletedFn, BufferRequestedFn, CuptiResult, SubscriberCallbackFn,
    TimestampFn, ERROR_INVALID_KIND, ERROR_INVALID_OPERATION, ERROR_INVALID_PARAMETER,
    ERROR_MAX_LIMIT_REACHED, ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED, ERROR_QUEUE_EMPTY,
    FLUSH_FORCED, RECORD_ALIGNMENT, SUCCESS,
};

use crate::{buffers, records, run};

#[no_mangle]
pub unsafe extern "C" fn cuptiGetVersion(version: *mut u32) -> CuptiResult {
    run("cuptiGetVersion", false, |script| {
        if version.is_null() {
            return ERROR_INVALID_PARAMETER;
        }
        // SAFETY: non-null pointer to the caller's uint32_t.
        unsafe { version.write(script.version) };
        SUCCESS
    })
}

/// The enum names of `CUptiResult`, as the real library gives them.
fn result_name(result: CuptiResult) -> Option<&'static [u8]> {
    Some(match result {
        0 => b"CUPTI_SUCCESS\0",
        1 => b"CUPTI_ERROR_INVALID_PARAMETER\0",
        2 => b"CUPTI_ERROR_INVALID_DEVICE\0",
        3 => b"CUPTI_ERROR_INVALID_CONTEXT\0",
        7 => b"CUPTI_ERROR_INVALID_OPERATION\0",
        8 => b"CUPTI_ERROR_OUT_OF_MEMORY\0",
        12 => b"CUPTI_ERROR_MAX_LIMIT_REACHED\0",
        13 => b"CUPTI_ERROR_NOT_READY\0",
        14 => b"CUPTI_ERROR_NOT_COMPATIBLE\0",
        15 => b"CUPTI_ERROR_NOT_INITIALIZED\0",
        18 => b"CUPTI_ERROR_QUEUE_EMPTY\0",
        21 => b"CUPTI_ERROR_INVALID_KIND\0",
        27 => b"CUPTI_ERROR_NOT_SUPPORTED\0",
        33 => b"CUPTI_ERROR_VIRTUALIZED_DEVICE_NOT_SUPPORTED\0",
        35 => b"CUPTI_ERROR_INSUFFICIENT_PRIVILEGES\0",
        39 => b"CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED\0",
        43 => b"CUPTI_ERROR_MIG_DEVICE_NOT_SUPPORTED\0",
        45 => b"CUPTI_ERROR_WSL_DEVICE_NOT_SUPPORTED\0",
        999 => b"CUPTI_ERROR_UNKNOWN\0",
        _ => return None,
    })
}

/// Writes a static string for `result`; a code it does not know gets `CUPTI_ERROR_UNKNOWN`
/// and INVALID_PARAMETER.
#[no_mangle]
pub unsafe extern "C" fn cuptiGetResultString(
    result: CuptiResult,
    text: *mut *const c_char,
) -> CuptiResult {
    run("cuptiGetResultString", false, |_| {
        if text.is_null() {
            return ERROR_INVALID_PARAMETER;
        }
        let (name, code) = match result_name(result) {
            Some(name) => (name, SUCCESS),
            None => (&b"CUPTI_ERROR_UNKNOWN\0"[..], ERROR_INVALID_PARAMETER),
        };
        // SAFETY: non-null pointer to the caller's `const char *`; the string is static.
        unsafe { text.write(name.as_ptr().cast()) };
        code
    })
}

static SUBSCRIBED: AtomicBool = AtomicBool::new(false);
/// The one subscriber handle: its address.
static SUBSCRIBER: u8 = 0;

fn subscriber_handle() -> *mut c_void {
    (&SUBSCRIBER as *const u8).cast_mut().cast()
}

/// Takes the one subscription (the callback is never called: the fake has no callback API
/// events), or returns the scripted `subscribe_error`, or 39 when already subscribed.
#[no_mangle]
pub unsafe extern "C" fn cuptiSubscribe(
    subscriber: *mut *mut c_void,
    _callback: Option<SubscriberCallbackFn>,
    _userdata: *mut c_void,
) -> CuptiResult {
    run("cuptiSubscribe", false, |script| {
        if subscriber.is_null() {
            return ERROR_INVALID_PARAMETER;
        }
        if script.subscribe_error != SUCCESS {
            return script.subscribe_error;
        }
        if SUBSCRIBED
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED;
        }
        // SAFETY: non-null pointer to the caller's handle.
        unsafe { subscriber.write(subscriber_handle()) };
        SUCCESS
    })
}

/// Gives the subscription back; enabled kinds, callbacks and buffers stay as they are.
#[no_mangle]
pub unsafe extern "C" fn cuptiUnsubscribe(subscriber: *mut c_void) -> CuptiResult {
    run("cuptiUnsubscribe", false, |_| {
        if subscriber != subscriber_handle() {
            return ERROR_INVALID_PARAMETER;
        }
        match SUBSCRIBED.compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => SUCCESS,
            Err(_) => ERROR_INVALID_PARAMETER,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuptiActivityRegisterCallbacks(
    requested: Option<BufferRequestedFn>,
    completed: Option<BufferCompletedFn>,
) -> CuptiResult {
    run("cuptiActivityRegisterCallbacks", false, |_| {
        match (requested, completed) {
            (Some(requested), Some(completed)) => {
                buffers::register(requested, completed);
                SUCCESS
            }
            _ => ERROR_INVALID_PARAMETER,
        }
    })
}

/// Makes `timestamp` CUPTI's clock (of `cuptiGetTimestamp` and of every record); NULL gives
/// CLOCK_MONOTONIC back.
#[no_mangle]
pub unsafe extern "C" fn cuptiActivityRegisterTimestampCallback(
    timestamp: Option<TimestampFn>,
) -> CuptiResult {
    run("cuptiActivityRegisterTimestampCallback", false, |_| {
        records::set_timestamp_callback(timestamp);
        SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuptiGetTimestamp(timestamp: *mut u64) -> CuptiResult {
    run("cuptiGetTimestamp", true, |_| {
        if timestamp.is_null() {
            return ERROR_INVALID_PARAMETER;
        }
        let now = records::now();
        // SAFETY: non-null pointer to the caller's uint64_t.
        unsafe { timestamp.write(now) };
        SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuptiActivityEnable(kind: u32) -> CuptiResult {
    run("cuptiActivityEnable", false, |script| {
        if !records::kind_is_valid(kind) {
            return ERROR_INVALID_KIND;
        }
        if let Some(&code) = script.enable_errors.get(&kind) {
            return code;
        }
        records::set_enabled(kind, true);
        SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuptiActivityDisable(kind: u32) -> CuptiResult {
    run("cuptiActivityDisable", false, |_| {
        if !records::kind_is_valid(kind) {
            return ERROR_INVALID_KIND;
        }
        records::set_enabled(kind, false);
        SUCCESS
    })
}

/// Delivers the completed buffers, and with FLUSH_FORCED the current one if it holds a
/// record, to BufferCompleted on this thread. INVALID_OPERATION before the callbacks are
/// registered.
#[no_mangle]
pub unsafe extern "C" fn cuptiActivityFlushAll(flags: u32) -> CuptiResult {
    run("cuptiActivityFlushAll", false, |_| {
        if buffers::flush(flags & FLUSH_FORCED != 0) {
            SUCCESS
        } else {
            ERROR_INVALID_OPERATION
        }
    })
}

/// The size of the valid record at `offset`, or INVALID_KIND for a kind without a size or a
/// record that crosses `valid_size`.
///
/// # Safety
/// `buffer` must hold `valid_size` readable bytes.
unsafe fn record_at(buffer: *const u8, offset: usize, valid_size: usize) -> Result<usize, u32> {
    if valid_size.saturating_sub(offset) < size_of::<u32>() {
        return Err(ERROR_INVALID_KIND);
    }
    // SAFETY: the 4 bytes at `offset` lie within the caller's `valid_size` bytes.
    let kind = unsafe { buffer.add(offset).cast::<u32>().read_unaligned() };
    match record_size(kind) {
        Some(size) if offset + size <= valid_size => Ok(size),
        _ => Err(ERROR_INVALID_KIND),
    }
}

/// The record after `*record` (the first when it is NULL); MAX_LIMIT_REACHED past the last.
#[no_mangle]
pub unsafe extern "C" fn cuptiActivityGetNextRecord(
    buffer: *mut u8,
    valid_size: usize,
    record: *mut *mut Activity,
) -> CuptiResult {
    run("cuptiActivityGetNextRecord", true, |_| {
        if buffer.is_null() || record.is_null() {
            return ERROR_INVALID_PARAMETER;
        }
        // SAFETY: non-null pointer to the caller's `CUpti_Activity *`.
        let current = unsafe { record.read() };
        let next = if current.is_null() {
            0
        } else {
            let at = (current as usize).wrapping_sub(buffer as usize);
            if (current as usize) < (buffer as usize) || at >= valid_size {
                return ERROR_INVALID_PARAMETER;
            }
            // SAFETY: the caller's buffer holds `valid_size` bytes (CUPTI's contract).
            match unsafe { record_at(buffer, at, valid_size) } {
                Ok(size) => (at + size).next_multiple_of(RECORD_ALIGNMENT),
                Err(code) => return code,
            }
        };
        if next >= valid_size {
            return ERROR_MAX_LIMIT_REACHED;
        }
        // SAFETY: as above.
        if let Err(code) = unsafe { record_at(buffer, next, valid_size) } {
            return code;
        }
        // SAFETY: as above; `next` is within the buffer, and the record pointer is the
        // caller's.
        unsafe { record.write(buffer.add(next).cast()) };
        SUCCESS
    })
}

/// Returns the records dropped since the last call (every context and stream: one count),
/// and starts the count again.
#[no_mangle]
pub unsafe extern "C" fn cuptiActivityGetNumDroppedRecords(
    _context: *mut c_void,
    _stream_id: u32,
    dropped: *mut usize,
) -> CuptiResult {
    run("cuptiActivityGetNumDroppedRecords", false, |_| {
        if dropped.is_null() {
            return ERROR_INVALID_PARAMETER;
        }
        let count = buffers::take_dropped();
        // SAFETY: non-null pointer to the caller's size_t.
        unsafe { dropped.write(count) };
        SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuptiActivityPushExternalCorrelationId(kind: u32, id: u64) -> CuptiResult {
    run("cuptiActivityPushExternalCorrelationId", true, |_| {
        if !records::external_kind_is_valid(kind) {
            return ERROR_INVALID_PARAMETER;
        }
        records::push_external(kind, id);
        SUCCESS
    })
}

/// Pops this thread's top id of `kind` into `last_id` (which may be NULL, as in CUPTI);
/// QUEUE_EMPTY when none is pushed.
#[no_mangle]
pub unsafe extern "C" fn cuptiActivityPopExternalCorrelationId(
    kind: u32,
    last_id: *mut u64,
) -> CuptiResult {
    run("cuptiActivityPopExternalCorrelationId", true, |_| {
        if !records::external_kind_is_valid(kind) {
            return ERROR_INVALID_PARAMETER;
        }
        let Some(id) = records::pop_external(kind) else {
            return ERROR_QUEUE_EMPTY;
        };
        if !last_id.is_null() {
            // SAFETY: non-null pointer to the caller's uint64_t.
            unsafe { last_id.write(id) };
        }
        SUCCESS
    })
}
