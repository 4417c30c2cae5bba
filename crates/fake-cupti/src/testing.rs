//! The test-only exports: what a test's "application" calls to make the GPU do something.
//! They run on the caller's thread, as a launch does: the records go through the buffer
//! protocol there, and BufferRequested may be called on it.
#![allow(unsafe_code, clippy::missing_safety_doc, clippy::too_many_arguments)]

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::records::{self, Kernel};
use crate::script;

/// Reads a `[u32; 3]` launch dimension; NULL is `1, 1, 1`.
///
/// # Safety
/// `dims` must be NULL or point at 3 readable `u32`s.
unsafe fn dims(dims: *const u32) -> [u32; 3] {
    if dims.is_null() {
        return [1, 1, 1];
    }
    // SAFETY: the caller's three u32s.
    unsafe { dims.cast::<[u32; 3]>().read_unaligned() }
}

/// Launches one kernel on `device`'s `stream`, running `duration_ns` from now: writes the
/// external correlation records (one per external kind with an id pushed on this thread, when
/// EXTERNAL_CORRELATION is enabled), the runtime API record (when RUNTIME is), and the kernel
/// record (CONCURRENT_KERNEL, else KERNEL). Returns the correlation id, or 0 when no kernel
/// kind is enabled (nothing is written then) or the script is bad.
///
/// `name` may be NULL (`?`); `grid` and `block` point at three `u32`s, or are NULL for 1,1,1.
#[no_mangle]
pub unsafe extern "C" fn fake_cupti_launch(
    name: *const c_char,
    device: u32,
    stream: u32,
    duration_ns: u64,
    grid: *const u32,
    block: *const u32,
    registers: u16,
    static_shared: u32,
    dynamic_shared: u32,
) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        if script::script().is_err() {
            return 0;
        }
        // SAFETY: the caller's name and dimensions, as documented.
        let kernel = unsafe {
            Kernel {
                name: records::intern(name),
                device,
                stream,
                duration_ns,
                grid: dims(grid),
                block: dims(block),
                registers,
                static_shared,
                dynamic_shared,
            }
        };
        records::launch(&kernel)
    }))
    .unwrap_or(0)
}

/// Launches a CUDA graph of `count` kernel nodes named `name` (grid and block 1,1,1): one
/// correlation id, the external and API records as a launch has them (the API record's cbid
/// is cudaGraphLaunch), then `count` kernel records back to back, each `duration_ns` long,
/// with one new graph id and node ids 1..=count. Returns the correlation id, or 0.
#[no_mangle]
pub unsafe extern "C" fn fake_cupti_launch_graph(
    name: *const c_char,
    device: u32,
    stream: u32,
    duration_ns: u64,
    count: u32,
) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        if script::script().is_err() {
            return 0;
        }
        let kernel = Kernel {
            // SAFETY: the caller's name, as documented.
            name: unsafe { records::intern(name) },
            device,
            stream,
            duration_ns,
            grid: [1, 1, 1],
            block: [1, 1, 1],
            registers: 0,
            static_shared: 0,
            dynamic_shared: 0,
        };
        records::launch_graph(&kernel, count)
    }))
    .unwrap_or(0)
}

/// Kernel records written into buffers so far (dropped ones not counted).
#[no_mangle]
pub extern "C" fn fake_cupti_records_written() -> u64 {
    records::kernels_written()
}

/// How many ids of external kind `kind` are pushed on the calling thread.
#[no_mangle]
pub extern "C" fn fake_cupti_external_depth(kind: u32) -> u32 {
    catch_unwind(|| records::external_depth(kind)).unwrap_or(0)
}
