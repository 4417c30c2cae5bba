//! The C ABI of the torch-op level: the schedule of the torch profiler's windows and the
//! windows themselves (the Python package calls both).

use std::ffi::c_char;

use vllm_profiler_core::ProfilerError;

use super::boundary::{guard, status};
use super::VLLM_PROFILER_E_NOT_ENABLED;
use crate::{runtime, torch_ops};

/// Longest window document vllm_profiler_torch_op_window takes, in bytes.
pub const VLLM_PROFILER_MAX_TORCH_OP_WINDOW_LEN: usize = torch_ops::MAX_WINDOW_JSON;

/// The schedule of torch profiler windows while profiling is on: `every << 32 | steps` (the
/// package profiles `steps` consecutive steps of every `every`, from
/// VLLM_PROFILING_TORCH_OP_EVERY and VLLM_PROFILING_TORCH_OP_STEPS), or 0 when windows are
/// off (VLLM_PROFILING_TORCH_OPS, `enable_torch_op_profiling`) or profiling is.
#[no_mangle]
pub extern "C" fn vllm_profiler_torch_op_schedule() -> u64 {
    guard(
        |_| 0,
        || Ok(runtime::is_enabled().then(torch_ops::schedule).unwrap_or(0)),
    )
}

/// Records one torch profiler window: `window_json` is `len` bytes of JSON (no NUL needed) with
/// the window's ops, their executions and its kernels, and the handles of the steps it
/// profiled, which this thread began (schema: `TorchOpWindowInput` in crates/format). The ops
/// go into the summary (`torch_op_performance`, `torch_op_windows`), the executions into the
/// trace, the kernels into the kernel level. Returns 0, or VLLM_PROFILER_E_INVALID_ARGUMENT
/// (the reason in vllm_profiler_last_error) for a document that does not parse, whose times do
/// not hold together, or longer than VLLM_PROFILER_MAX_TORCH_OP_WINDOW_LEN; nothing of a
/// refused window is recorded.
///
/// # Safety
/// `window_json` is NULL or points to `len` readable bytes, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_torch_op_window(
    window_json: *const c_char,
    len: usize,
) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| {
        if window_json.is_null() {
            return Err(ProfilerError::InvalidArgument("window_json is NULL"));
        }
        if len > VLLM_PROFILER_MAX_TORCH_OP_WINDOW_LEN {
            return Err(ProfilerError::InvalidArgument(
                "window_json is longer than VLLM_PROFILER_MAX_TORCH_OP_WINDOW_LEN",
            ));
        }
        // SAFETY: not NULL (checked), and `len` readable bytes (this function's contract).
        let json = unsafe { std::slice::from_raw_parts(window_json.cast::<u8>(), len) };
        // The window names the step handles of the calling thread's recorder.
        runtime::with_recorder(|recorder| recorder.record_torch_op_window_json(json))
    })
}
