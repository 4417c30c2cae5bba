//! Every `extern "C"` function of `libvllm_profiler.so`: the C ABI, whose header cbindgen
//! writes from here.
//!
//! Contract: every function is safe to call from any thread at any time with any argument;
//! those that take a pointer (`unsafe`, each with its `# Safety`) need it NULL or valid.
//! Errors come back as negative codes (handles: 0) and a message in the thread's last error;
//! no panic crosses this boundary.
#![allow(unsafe_code)]

use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use vllm_profiler_core::ProfilerError;

use crate::runtime;

mod boundary;
mod torch_ops;

pub use torch_ops::*;

use boundary::{c_str, c_str_bounded, copy_last_error, copy_out, guard, status};

/// Success.
pub const VLLM_PROFILER_OK: i32 = 0;
/// Profiling is not enabled; nothing was recorded.
pub const VLLM_PROFILER_E_NOT_ENABLED: i32 = -1;
/// A NULL pointer, an empty name, a string that is not UTF-8, or a rejected `shapes_json`.
pub const VLLM_PROFILER_E_INVALID_ARGUMENT: i32 = -2;
/// The handle is unknown, already ended, or was begun on another thread.
pub const VLLM_PROFILER_E_UNKNOWN_HANDLE: i32 = -3;
/// The configuration JSON was rejected; nothing was changed.
pub const VLLM_PROFILER_E_INVALID_CONFIG: i32 = -4;
/// Writing a report failed.
pub const VLLM_PROFILER_E_IO: i32 = -5;
/// The thread's event buffer was full: the event was dropped and counted.
pub const VLLM_PROFILER_E_BUFFER_FULL: i32 = -6;
/// A limit was reached (span name longer than 1024 bytes, more than 65536 distinct names,
/// more than VLLM_PROFILER_MAX_OPEN_SPANS spans open on the thread).
pub const VLLM_PROFILER_E_LIMIT: i32 = -7;
/// The calling thread is exiting.
pub const VLLM_PROFILER_E_THREAD_EXITING: i32 = -8;
/// An internal error was caught before it could reach the host.
pub const VLLM_PROFILER_E_INTERNAL: i32 = -9;

/// Longest `shapes_json` that vllm_profiler_span_end_annotated accepts, in bytes (without the
/// NUL).
pub const VLLM_PROFILER_MAX_SHAPES_JSON_LEN: usize = 4096;
/// Most spans one thread may have open at once: past it, vllm_profiler_span_begin returns 0
/// with VLLM_PROFILER_E_LIMIT and the open spans are kept.
pub const VLLM_PROFILER_MAX_OPEN_SPANS: usize = 4096;
/// Most steps one thread may have open at once: past it, the oldest open step is abandoned
/// (counted as unfinished), so that a path that leaks steps never stops recording.
pub const VLLM_PROFILER_MAX_OPEN_STEPS: usize = 1024;

/// Turns profiling on. `config_json` is NULL to take the environment, or a JSON object whose
/// keys override it: `enable_gpu_monitoring`, `enable_layer_profiling`, `output_dir`,
/// `sample_interval`, `export_interval` (or `auto_export_interval`), `max_history`, `devices`.
/// Works whether or not `VLLM_ENABLE_PROFILING` is set. Returns 0 or a negative error code.
///
/// # Safety
/// `config_json` is NULL or a NUL-terminated string, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_enable(config_json: *const c_char) -> i32 {
    status(|| {
        // SAFETY: config_json is NULL or a valid C string (this function's contract).
        let json = match unsafe { c_str(config_json) } {
            None => None,
            Some(s) => Some(s.to_str().map_err(|_| {
                ProfilerError::InvalidConfig("the configuration is not UTF-8".into())
            })?),
        };
        runtime::enable(json)
    })
}

/// Stops recording and the agent's threads, then writes the final reports.
/// Returns 0, or a negative error code (VLLM_PROFILER_E_NOT_ENABLED when it was not on).
#[no_mangle]
pub extern "C" fn vllm_profiler_disable() -> i32 {
    status(|| runtime::disable().map(drop))
}

/// What the exit hook does, for a host about to leave without exit hooks (`_exit`; Python's
/// multiprocessing children end with `os._exit`): stops recording and the agent's threads and,
/// if this process recorded anything, writes the final reports. Later calls are no-ops.
/// Returns 1 when reports were written, 0 when there was nothing to write, or a negative error
/// code when writing failed.
#[no_mangle]
pub extern "C" fn vllm_profiler_finish() -> i32 {
    guard(|code| code, || runtime::finish().map(i32::from))
}

/// Makes what this process recorded so far crash-safe now, on the calling thread: drains the
/// thread rings and appends them to the journal (otherwise the collector does so every 50 ms).
/// For a host about to go idle, after which it may be killed at once: vLLM's engine calls it
/// when its last request is done. Costs one write. Returns 0 (also when there was nothing to
/// write, or profiling is off) or a negative error code when the journal could not be written.
#[no_mangle]
pub extern "C" fn vllm_profiler_flush() -> i32 {
    status(runtime::flush)
}

/// 1 when recording is on, else 0.
#[no_mangle]
pub extern "C" fn vllm_profiler_is_enabled() -> i32 {
    guard(|_| 0, || Ok(i32::from(runtime::is_enabled())))
}

/// Opens an inference step on the calling thread. Returns its handle, or 0 when nothing is
/// recorded (see vllm_profiler_last_error).
///
/// While profiling is off, this and the other recording calls (step_set_counts, step_end,
/// span_begin, span_end, span_end_annotated) cost one atomic load: they return 0 or
/// VLLM_PROFILER_E_NOT_ENABLED and leave vllm_profiler_last_error as it was.
#[no_mangle]
pub extern "C" fn vllm_profiler_step_begin(batch_size: u32, num_tokens: u32) -> u64 {
    if runtime::recording_off() {
        return 0;
    }
    step_begin_recording(batch_size, num_tokens)
}

// Kept out of line so that the exported function stays a load, a test and a return when
// profiling is off (no stack frame for the unwinding guard).
#[inline(never)]
fn step_begin_recording(batch_size: u32, num_tokens: u32) -> u64 {
    guard(
        |_| 0,
        || runtime::with_recorder(|r| r.step_begin(batch_size, num_tokens)),
    )
}

/// Sets the batch size and token count of a step still open on this thread, for engines that
/// learn them inside the step (after scheduling). Returns 0 or a negative error code.
#[no_mangle]
pub extern "C" fn vllm_profiler_step_set_counts(
    step: u64,
    batch_size: u32,
    num_tokens: u32,
) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| runtime::with_recorder(|r| r.step_set_counts(step, batch_size, num_tokens)))
}

/// Sets which engine step a step still open on this thread served: a vLLM worker's step
/// carries the engine core's step number from the scheduler output it runs, so that the
/// reports of the two processes can be joined on it. `UINT64_MAX` clears it. Returns 0 or a
/// negative error code.
#[no_mangle]
pub extern "C" fn vllm_profiler_step_set_engine_step(step: u64, engine_step: u64) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| runtime::with_recorder(|r| r.step_set_engine_step(step, engine_step)))
}

/// Says what this process is in a vLLM server, for every report from now on: `role` is one of
/// `api_server`, `engine_core`, `worker`, `process` (NUL-terminated); `rank` is a worker's rank,
/// or negative for none (ignored for other roles). Works before profiling starts and does not
/// start it. Returns 0 or a negative error code.
///
/// # Safety
/// `role` is NULL or a NUL-terminated string, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_set_role(role: *const c_char, rank: i32) -> i32 {
    status(|| {
        // SAFETY: role is NULL or a valid C string (this function's contract).
        let name = unsafe { c_str_bounded(role, 32) }
            .ok_or(ProfilerError::InvalidArgument("role is NULL"))?;
        let role = std::str::from_utf8(name)
            .ok()
            .and_then(vllm_profiler_format::Role::parse)
            .ok_or(ProfilerError::InvalidArgument(
                "role is not one of api_server, engine_core, worker, process",
            ))?;
        runtime::set_role(role, u32::try_from(rank).ok());
        Ok(())
    })
}

/// Closes a step opened on this thread, and any span still open inside it.
/// Returns 0 or a negative error code.
#[no_mangle]
pub extern "C" fn vllm_profiler_step_end(step: u64) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    step_end_recording(step)
}

#[inline(never)]
fn step_end_recording(step: u64) -> i32 {
    status(|| runtime::with_recorder(|r| r.step_end(step)))
}

/// Opens a span (a layer) named by a NUL-terminated UTF-8 string; it nests in the innermost
/// open span and step of this thread. Returns its handle, or 0 when nothing is recorded.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_span_begin(name: *const c_char) -> u64 {
    if runtime::recording_off() {
        return 0;
    }
    guard(
        |_| 0,
        || {
            // SAFETY: name is NULL or a valid C string (this function's contract).
            let name = unsafe { c_str(name) }
                .ok_or(ProfilerError::InvalidArgument("span name is NULL"))?;
            runtime::with_recorder(|r| r.span_begin(name.to_bytes()))
        },
    )
}

/// Closes a span opened on this thread; spans opened inside it and still open are closed too.
/// Returns 0 or a negative error code.
#[no_mangle]
pub extern "C" fn vllm_profiler_span_end(span: u64) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| runtime::with_recorder(|r| r.span_end(span)))
}

/// Closes a span like vllm_profiler_span_end and attaches what the caller measured over it.
///
/// `memory_delta_mb`: the change of allocated memory over the span, in MiB (for example
/// torch.cuda.memory_allocated() after minus before, / 2^20); NaN or infinite when unknown.
/// Kept with `float` precision. `shapes_json`: NULL, or a NUL-terminated JSON object of at most
/// VLLM_PROFILER_MAX_SHAPES_JSON_LEN bytes, `{"input_shapes": [[8, 512, 768]],
/// "output_shapes": [[8, 512, 768]]}`: either key may be left out, no other key is allowed,
/// every dimension is a non-negative integer. A repeated string costs one hash lookup.
///
/// Per step, a layer's `memory_delta_mb` is the sum over its annotated calls and its
/// `input_shapes`/`output_shapes` those of its first call that carried shapes; spans closed
/// with this one because they were still open inside it carry no annotations.
///
/// A rejected `shapes_json` (not UTF-8, not JSON, an unknown key, a wrong type, too long) loses
/// nothing else: the span is ended with its duration and memory delta, without shapes, and
/// VLLM_PROFILER_E_INVALID_ARGUMENT comes back with the reason in vllm_profiler_last_error.
/// Returns 0 or a negative error code; an unknown handle ends nothing.
///
/// # Safety
/// `shapes_json` is NULL or a NUL-terminated string, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_span_end_annotated(
    span: u64,
    memory_delta_mb: f64,
    shapes_json: *const c_char,
) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| {
        // SAFETY: shapes_json is NULL or a valid C string (this function's contract).
        let shapes = unsafe { c_str_bounded(shapes_json, VLLM_PROFILER_MAX_SHAPES_JSON_LEN) };
        // Out of f32 range becomes infinite, which the recorder stores as none.
        let memory = memory_delta_mb as f32;
        runtime::with_recorder(|r| r.span_end_annotated(span, memory, shapes))
    })
}

/// Releases CUPTI for another client until vllm_profiler_kernels_resume: the kernel tracer
/// (`VLLM_PROFILING_KERNELS=1`) flushes what it holds, disables its records and gives up its
/// subscription, so that the torch profiler can take it. Call it before torch.profiler starts
/// (the Python package does). Works whether or not kernels are traced. Returns 0.
#[no_mangle]
pub extern "C" fn vllm_profiler_kernels_pause() -> i32 {
    status(|| {
        vllm_profiler_cupti::pause();
        Ok(())
    })
}

/// Takes CUPTI back after vllm_profiler_kernels_pause (after torch.profiler stopped).
/// Returns 0, or VLLM_PROFILER_E_INTERNAL with the reason in vllm_profiler_last_error when
/// CUPTI could not be taken back (another client still holds it); kernels are then not traced
/// until the next successful resume.
#[no_mangle]
pub extern "C" fn vllm_profiler_kernels_resume() -> i32 {
    status(|| {
        vllm_profiler_cupti::resume()
            .map_err(|err| ProfilerError::Internal(format!("CUPTI not taken back: {err}")))
    })
}

/// Sets the device time of a span this thread has ended: what the GPU spent on its work, as
/// measured by the caller (for example a pair of CUDA events recorded on the stream at its begin
/// and end, resolved once the GPU is past them). It is added to the span's layer in its step
/// (`gpu_duration_ms`) and in the summary. A span ended more than 4096 spans before on this
/// thread is forgotten: VLLM_PROFILER_E_UNKNOWN_HANDLE. Returns 0 or a negative error code.
#[no_mangle]
pub extern "C" fn vllm_profiler_span_set_gpu_duration(span: u64, gpu_duration_ns: u64) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| runtime::with_recorder(|r| r.span_set_gpu_duration(span, gpu_duration_ns)))
}

/// Sets the device time of a step this thread has ended (its `gpu_duration_ms`), as
/// vllm_profiler_span_set_gpu_duration does for a span. A step still open is refused with
/// VLLM_PROFILER_E_INVALID_ARGUMENT. Returns 0 or a negative error code.
#[no_mangle]
pub extern "C" fn vllm_profiler_step_set_gpu_duration(step: u64, gpu_duration_ns: u64) -> i32 {
    if runtime::recording_off() {
        return VLLM_PROFILER_E_NOT_ENABLED;
    }
    status(|| runtime::with_recorder(|r| r.step_set_gpu_duration(step, gpu_duration_ns)))
}

/// Writes the reports now into `dir` (created if missing), or the configured dir when NULL.
/// Returns the number of files written (0 when nothing was recorded or sampled), or a negative
/// error code.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_export(dir: *const c_char) -> i32 {
    guard(
        |code| code,
        || {
            // SAFETY: dir is NULL or a valid C string (this function's contract).
            let dir = unsafe { c_str(dir) }.map(|d| Path::new(OsStr::from_bytes(d.to_bytes())));
            if dir.is_some_and(|d| d.as_os_str().is_empty()) {
                return Err(ProfilerError::InvalidArgument("export dir is empty"));
            }
            Ok(runtime::export(dir)?.len() as i32)
        },
    )
}

/// The performance summary as JSON, over every step (`last_n_steps` = 0) or the last n kept
/// steps. Copies at most `len - 1` bytes and a NUL into `buf` (may be NULL), like snprintf, and
/// returns the full length in bytes; call again with a larger buffer when it is >= `len`.
/// Negative: an error code.
///
/// # Safety
/// `buf` is NULL, or points to `len` writable bytes, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_summary_json(
    last_n_steps: u32,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    guard(i64::from, || {
        let last_n = (last_n_steps > 0).then_some(u64::from(last_n_steps));
        let json = runtime::summary_json(last_n)?;
        // SAFETY: buf is NULL or has len writable bytes (this function's contract).
        Ok(unsafe { copy_out(&json, buf, len) } as i64)
    })
}

/// The kept GPU samples as JSON (the shape of `gpu_history_<pid>.json`): of device
/// `device_id`, or of every device when it is negative, taken at or after `since_unix` (Unix
/// seconds; 0 for all). Same buffer protocol as `vllm_profiler_summary_json`.
///
/// # Safety
/// `buf` is NULL, or points to `len` writable bytes, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_gpu_history_json(
    device_id: i32,
    since_unix: f64,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    guard(i64::from, || {
        if since_unix.is_nan() {
            return Err(ProfilerError::InvalidArgument("since_unix is NaN"));
        }
        let device = u32::try_from(device_id).ok();
        let json = runtime::gpu_history_json(device, since_unix)?;
        // SAFETY: buf is NULL or has len writable bytes (this function's contract).
        Ok(unsafe { copy_out(&json, buf, len) } as i64)
    })
}

/// Seed 001's GPU list as JSON (`{"gpus": [...], "total": n, "detector": "..."}`), detected
/// and sampled now by the same chain as the sampler (amd-smi, NVML, CPU), with the
/// environment's `VLLM_PROFILING_*_LIBRARY` and `VLLM_PROFILING_DEVICES`. Works without
/// profiling; loads the vendor library on the calling thread. Same buffer protocol as
/// `vllm_profiler_summary_json`; each call samples again.
///
/// # Safety
/// `buf` is NULL, or points to `len` writable bytes, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_gpus_json(buf: *mut c_char, len: usize) -> i64 {
    guard(i64::from, || {
        let json = runtime::gpus_json()?;
        // SAFETY: buf is NULL or has len writable bytes (this function's contract).
        Ok(unsafe { copy_out(&json, buf, len) } as i64)
    })
}

/// The message of the calling thread's last error. Copies at most `len - 1` bytes and a NUL
/// into `buf` (may be NULL) and returns the message length; 0 when no call has failed yet.
///
/// # Safety
/// `buf` is NULL, or points to `len` writable bytes, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vllm_profiler_last_error(buf: *mut c_char, len: usize) -> i32 {
    guard(
        |code| code,
        || {
            // SAFETY: buf is NULL or has len writable bytes (this function's contract).
            let n = unsafe { copy_last_error(buf, len) };
            Ok(n as i32)
        },
    )
}

/// The library version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn vllm_profiler_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_codes_match_the_error_enum() {
        let cases = [
            (ProfilerError::NotEnabled, VLLM_PROFILER_E_NOT_ENABLED),
            (
                ProfilerError::InvalidArgument(""),
                VLLM_PROFILER_E_INVALID_ARGUMENT,
            ),
            (
                ProfilerError::InvalidShapes(String::new()),
                VLLM_PROFILER_E_INVALID_ARGUMENT,
            ),
            (
                ProfilerError::UnknownHandle {
                    kind: "",
                    handle: 0,
                },
                VLLM_PROFILER_E_UNKNOWN_HANDLE,
            ),
            (
                ProfilerError::InvalidConfig(String::new()),
                VLLM_PROFILER_E_INVALID_CONFIG,
            ),
            (ProfilerError::Io(String::new()), VLLM_PROFILER_E_IO),
            (ProfilerError::BufferFull, VLLM_PROFILER_E_BUFFER_FULL),
            (ProfilerError::LimitExceeded(""), VLLM_PROFILER_E_LIMIT),
            (ProfilerError::ThreadExiting, VLLM_PROFILER_E_THREAD_EXITING),
            (
                ProfilerError::Internal(String::new()),
                VLLM_PROFILER_E_INTERNAL,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn limits_in_the_header_are_the_recorder_s() {
        assert_eq!(
            VLLM_PROFILER_MAX_SHAPES_JSON_LEN,
            vllm_profiler_core::shapes::MAX_SHAPES_JSON_LEN
        );
        assert_eq!(
            VLLM_PROFILER_MAX_OPEN_SPANS,
            vllm_profiler_core::recorder::MAX_OPEN_SPANS
        );
        assert_eq!(
            VLLM_PROFILER_MAX_OPEN_STEPS,
            vllm_profiler_core::recorder::MAX_OPEN_STEPS
        );
    }
}
