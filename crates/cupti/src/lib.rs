//! The kernel level of vllm-profiler: CUPTI's Activity API, loaded at run time.
//!
//! `layout` is the contract with the library (and with the fake CUPTI of the tests);
//! `tracer` runs it on a thread of the agent's and hands kernels to a `Sink`.

pub mod buffers;
pub mod error;
pub mod layout;
pub mod library;
pub mod parse;
pub mod sink;
pub mod tracer;

pub use error::CuptiError;
pub use sink::{Kernel, Sink};
pub use tracer::{correlating, flush_now, pause, pop_context, push_context, resume, run, Options};
