//! `libvllm_profiler.so`: the in-process agent of vllm-profiler.
//!
//! - `ffi`: every `extern "C"` function of the C ABI;
//! - `process_hooks`: the `atexit` and `pthread_atfork` trampolines;
//! - `signals`: SIGTERM with the default disposition (the journal's tail, then the signal);
//! - `quiet_threads`: spawns the agent's threads with every asynchronous signal blocked;
//! - `warnings`: the agent's only output, one stderr line per distinct warning;
//! - `config`: the environment and the JSON configuration, from one table of settings;
//! - `gate`: the one atomic word the hot path reads (on, armed, generation);
//! - `runtime`: the session, enable/disable/export, fork and exit, through the gate;
//! - `identity`: what this process is in a vLLM server, and its rank;
//! - `output_dir`: where a relative output dir is resolved;
//! - `threads`: the collector, sampler and exporter threads;
//! - `sampling`: one tick of the sampler thread;
//! - `kernels`: the CUPTI tracer's thread, its sink, and the contexts recording threads push;
//! - `metrics` and `http`: the Prometheus endpoint and its bounded server.
//!
//! Unsafe code lives in `ffi`, `process_hooks`, `signals`, `quiet_threads`, `warnings`, and
//! the runtime's two fork hooks, each block with its `SAFETY` comment; the workspace denies
//! it everywhere else (`[workspace.lints]`).

mod config;
mod ffi;
mod gate;
mod http;
mod identity;
mod kernels;
mod metrics;
mod output_dir;
mod process_hooks;
mod quiet_threads;
mod run;
mod runtime;
mod sampling;
mod signals;
mod threads;
mod torch_ops;
mod warnings;

/// The table of every setting, for the tests that hold the README and the Python package to it.
pub use config::table as config_table;
pub use ffi::*;

/// The library constructor: only reads the environment and decides; never waits for a thread
/// (the loader lock is held under `dlopen`).
#[ctor::ctor(unsafe)]
fn vllm_profiler_on_load() {
    let _ = std::panic::catch_unwind(runtime::on_load);
}
