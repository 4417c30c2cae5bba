//! `libvllm_profiler.so`: the in-process agent of vllm-profiler.
//!
//! - `ffi`: every `extern "C"` function, the constructor and the process hooks;
//! - `quiet_threads`: spawns the agent's threads with every asynchronous signal blocked (with
//!   `ffi` and `signals`, the only unsafe code);
//! - `signals`: the final export on SIGTERM;
//! - `config`: the environment and the JSON configuration;
//! - `runtime`: the gate, the session, enable/disable/export, fork and exit;
//! - `threads`: the collector and sampler threads;
//! - `metrics`: the Prometheus endpoint.
#![deny(unsafe_code)]

mod config;
mod ffi;
mod http;
mod metrics;
mod quiet_threads;
mod runtime;
mod signals;
mod threads;

pub use ffi::*;
