//! The C ABI as the fuzzer calls it: the exports that take no pointer as they are, and those
//! that do wrapped to take what their pointers are made of (a C string or none, a buffer), so
//! that the rest of the crate has no unsafe code. A NULL comes from `None` or an empty buffer.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr};

pub use vllm_profiler::{
    vllm_profiler_disable, vllm_profiler_flush, vllm_profiler_is_enabled, vllm_profiler_span_end,
    vllm_profiler_span_set_gpu_duration, vllm_profiler_step_begin, vllm_profiler_step_end,
    vllm_profiler_step_set_counts, vllm_profiler_step_set_engine_step,
    vllm_profiler_step_set_gpu_duration, vllm_profiler_version,
};

fn c_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

fn buf_ptr(buf: &mut [u8]) -> *mut c_char {
    if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    }
}

pub fn vllm_profiler_enable(config_json: Option<&CStr>) -> i32 {
    // SAFETY: NULL or a C string that outlives the call.
    unsafe { vllm_profiler::vllm_profiler_enable(c_ptr(config_json)) }
}

pub fn vllm_profiler_set_role(role: Option<&CStr>, rank: i32) -> i32 {
    // SAFETY: NULL or a C string that outlives the call.
    unsafe { vllm_profiler::vllm_profiler_set_role(c_ptr(role), rank) }
}

pub fn vllm_profiler_span_begin(name: Option<&CStr>) -> u64 {
    // SAFETY: NULL or a C string that outlives the call.
    unsafe { vllm_profiler::vllm_profiler_span_begin(c_ptr(name)) }
}

pub fn vllm_profiler_span_end_annotated(span: u64, delta: f64, shapes: Option<&CStr>) -> i32 {
    // SAFETY: NULL or a C string that outlives the call.
    unsafe { vllm_profiler::vllm_profiler_span_end_annotated(span, delta, c_ptr(shapes)) }
}

pub fn vllm_profiler_export(dir: Option<&CStr>) -> i32 {
    // SAFETY: NULL or a C string that outlives the call.
    unsafe { vllm_profiler::vllm_profiler_export(c_ptr(dir)) }
}

pub fn vllm_profiler_summary_json(last_n_steps: u32, buf: &mut [u8]) -> i64 {
    // SAFETY: NULL (an empty buffer) or `buf.len()` writable bytes that outlive the call.
    unsafe { vllm_profiler::vllm_profiler_summary_json(last_n_steps, buf_ptr(buf), buf.len()) }
}

pub fn vllm_profiler_gpu_history_json(device: i32, since: f64, buf: &mut [u8]) -> i64 {
    // SAFETY: as above.
    unsafe { vllm_profiler::vllm_profiler_gpu_history_json(device, since, buf_ptr(buf), buf.len()) }
}

pub fn vllm_profiler_gpus_json(buf: &mut [u8]) -> i64 {
    // SAFETY: as above.
    unsafe { vllm_profiler::vllm_profiler_gpus_json(buf_ptr(buf), buf.len()) }
}

pub fn vllm_profiler_last_error(buf: &mut [u8]) -> i32 {
    // SAFETY: as above.
    unsafe { vllm_profiler::vllm_profiler_last_error(buf_ptr(buf), buf.len()) }
}
