//! A fake CUPTI for tests without a GPU: exports the Activity API functions vllm-profiler's
//! kernel tracer uses, with the real buffer protocol (buffers requested from the client on the
//! thread that writes, completed when full, delivered by `cuptiActivityFlushAll`), and records
//! made on demand by the test-only `fake_cupti_launch*` exports, in the layouts of
//! `vllm_profiler_cupti::layout`. Its behaviour is scripted by `FAKE_CUPTI_SCRIPT`
//! (see [`script`]). It prints nothing on stdout.
//!
//! Load `libfake_cupti.so` in place of `libcupti.so.12` (through the tracer's library path
//! override). One process is one CUPTI: all state is global, as in the real library.
#![allow(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use vllm_profiler_cupti::layout::{CuptiResult, ERROR_UNKNOWN};

mod buffers;
pub mod exports;
mod records;
pub mod script;
pub mod testing;

pub use buffers::MIN_BUFFER_SIZE;

#[ctor::ctor(unsafe)]
fn load_script() {
    // Read the script inside dlopen, so that omit_symbols hides before anyone looks.
    if let Ok(script) = script::script() {
        let anchor = exports::cuptiGetVersion as *const std::ffi::c_void;
        if let Err(err) = fake_gpu_script::symbols::hide(anchor, &script.omit_symbols) {
            eprintln!("fake CUPTI: {err}");
        }
    }
}

/// Runs the CUPTI function `function`'s body with the script, or returns the code it returns
/// instead (a bad script, a scripted error); a panic returns CUPTI_ERROR_UNKNOWN rather than
/// unwinding into C.
fn run(
    function: &str,
    hot: bool,
    body: impl FnOnce(&'static script::Script) -> CuptiResult,
) -> CuptiResult {
    catch_unwind(AssertUnwindSafe(|| match script::enter(function, hot) {
        Ok(script) => body(script),
        Err(code) => code,
    }))
    .unwrap_or(ERROR_UNKNOWN)
}
