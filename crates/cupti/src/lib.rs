//! The kernel level of vllm-profiler: CUPTI's Activity API, loaded at run time.
//!
//! `layout` is the contract with the library (and with the fake CUPTI of the tests).

pub mod layout;
