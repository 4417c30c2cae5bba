//! The kernel level of vllm-profiler: CUPTI's Activity API, loaded at run time.
//!
//! `layout` is the contract with the library (and with the fake CUPTI of the tests);
//! `tracer` runs it on a thread of the agent's and hands kernels to a `Sink`, a session's
//! (`SessionSink`) in the agent.

pub mod buffers;
pub mod error;
pub mod layout;
pub mod library;
pub mod parse;
pub mod session_sink;
pub mod sink;
pub mod tracer;

pub use error::CuptiError;
pub use session_sink::SessionSink;
pub use sink::{Kernel, Sink};
pub use tracer::{correlating, flush_now, pause, pop_context, push_context, resume, run, Options};
