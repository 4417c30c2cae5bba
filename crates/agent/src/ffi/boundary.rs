//! The C boundary's plumbing: each thread's last error, the guard that turns an error or a
//! panic into a code, and the reading and writing of the caller's C strings and buffers.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vllm_profiler_core::{ProfilerError, Result};

use super::VLLM_PROFILER_OK;

const LAST_ERROR_CAPACITY: usize = 512;

/// The last error of a thread: a static message, or one formatted into `buf`.
struct LastError {
    static_message: Option<&'static str>,
    len: usize,
    buf: [u8; LAST_ERROR_CAPACITY],
}

impl LastError {
    fn message(&self) -> &[u8] {
        match self.static_message {
            Some(message) => message.as_bytes(),
            None => &self.buf[..self.len],
        }
    }
}

thread_local! {
    // No destructor: readable even while the thread's other thread-locals are being destroyed.
    static LAST_ERROR: RefCell<LastError> = const {
        RefCell::new(LastError { static_message: None, len: 0, buf: [0; LAST_ERROR_CAPACITY] })
    };
}

pub(super) fn set_last_error(err: &ProfilerError) {
    use std::io::Write;
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut last) = cell.try_borrow_mut() {
            last.static_message = err.static_message();
            if last.static_message.is_some() {
                return;
            }
            let mut cursor: &mut [u8] = &mut last.buf;
            let _ = write!(cursor, "{err}");
            let written = LAST_ERROR_CAPACITY - cursor.len();
            // Never cut a UTF-8 sequence in half.
            let valid = match std::str::from_utf8(&last.buf[..written]) {
                Ok(_) => written,
                Err(e) => e.valid_up_to(),
            };
            last.len = valid;
        }
    });
}

/// Runs `body`; an error or a panic becomes the thread's last error and `on_error(code)`.
pub(super) fn guard<T>(on_error: impl FnOnce(i32) -> T, body: impl FnOnce() -> Result<T>) -> T {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => return value,
        Ok(Err(err)) => err,
        Err(_) => ProfilerError::Internal("a panic was caught at the C boundary".into()),
    };
    set_last_error(&err);
    on_error(err.code())
}

pub(super) fn status(body: impl FnOnce() -> Result<()>) -> i32 {
    guard(|code| code, || body().map(|()| VLLM_PROFILER_OK))
}

/// Reads an optional C string. NULL is `None`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub(super) unsafe fn c_str<'a>(ptr: *const c_char) -> Option<&'a CStr> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: not NULL (checked), so a NUL-terminated string valid for 'a (this fn's contract).
    Some(unsafe { CStr::from_ptr(ptr) })
}

/// Reads an optional C string, at most `max + 1` bytes of it: a longer one comes back cut to
/// `max + 1` bytes, enough for the callee to reject it as too long without reading it all.
///
/// # Safety
/// As [`c_str`].
pub(super) unsafe fn c_str_bounded<'a>(ptr: *const c_char, max: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: not NULL (checked), so a NUL-terminated string valid for 'a (this fn's contract);
    // strnlen reads up to the NUL or max + 1 bytes, whichever comes first, so never past it.
    let len = unsafe { libc::strnlen(ptr, max + 1) };
    // SAFETY: the `len` bytes at `ptr` were just read by strnlen: they are part of the string.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// snprintf-style copy: writes at most `len - 1` bytes and a NUL; returns `src.len()`.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes that `src` does not overlap.
pub(super) unsafe fn copy_out(src: &[u8], buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = src.len().min(len - 1);
        // SAFETY: `buf` has `len` writable bytes (this fn's contract; non-NULL and len > 0
        // checked); we write n + 1 <= len bytes from a source that does not overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    src.len()
}

/// The calling thread's last error message, copied out like snprintf.
///
/// # Safety
/// As [`copy_out`].
pub(super) unsafe fn copy_last_error(buf: *mut c_char, len: usize) -> usize {
    LAST_ERROR
        // SAFETY: this fn's contract is copy_out's.
        .try_with(|cell| unsafe { copy_out(cell.borrow().message(), buf, len) })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_c_strings_stop_one_past_the_limit() {
        let short = c"{}";
        let long = std::ffi::CString::new(vec![b'x'; 100]).unwrap();
        // SAFETY: C strings that outlive the calls, and NULL.
        unsafe {
            assert_eq!(c_str_bounded(short.as_ptr(), 4), Some(&b"{}"[..]));
            assert_eq!(c_str_bounded(long.as_ptr(), 10).map(<[u8]>::len), Some(11));
            assert_eq!(c_str_bounded(std::ptr::null(), 10), None);
        }
    }

    #[test]
    fn copy_out_truncates_like_snprintf() {
        let mut buf = [0x55 as c_char; 4];
        // SAFETY: a buffer of 4 bytes, then NULL.
        assert_eq!(unsafe { copy_out(b"hello", buf.as_mut_ptr(), 4) }, 5);
        assert_eq!(&buf, &[b'h' as c_char, b'e' as c_char, b'l' as c_char, 0]);
        // SAFETY: NULL with a capacity of 0: nothing is written.
        assert_eq!(unsafe { copy_out(b"hello", std::ptr::null_mut(), 0) }, 5);
    }

    #[test]
    fn last_error_keeps_whole_utf8_characters() {
        set_last_error(&ProfilerError::InvalidConfig("é".repeat(400)));
        LAST_ERROR.with(|c| {
            let last = c.borrow();
            assert!(last.len <= LAST_ERROR_CAPACITY && last.len > 100);
            assert!(std::str::from_utf8(last.message()).is_ok());
        });
    }

    #[test]
    fn frequent_errors_store_their_static_message() {
        set_last_error(&ProfilerError::InvalidConfig("x".into()));
        set_last_error(&ProfilerError::NotEnabled);
        let mut buf = [0 as c_char; 64];
        // SAFETY: a buffer of buf.len() bytes.
        let n = unsafe { super::super::vllm_profiler_last_error(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: vllm_profiler_last_error NUL-terminated the buffer.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(text, "profiling is not enabled");
        assert_eq!(n as usize, text.len());
    }
}
