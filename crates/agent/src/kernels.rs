//! The kernel level in the agent: the CUPTI tracer runs on a thread of ours and hands its
//! kernels to the session; each recording thread keeps the context of its innermost step and
//! span pushed to CUPTI, so that the kernels it launches are attributed to them.

use std::cell::Cell;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use vllm_profiler_core::{Session, ThreadRecorder};
use vllm_profiler_cupti as cupti;

use crate::warnings;

thread_local! {
    /// What this thread has pushed to CUPTI; 0: nothing.
    static PUSHED: Cell<u64> = const { Cell::new(0) };
}

/// After a recording call: pushes the thread's new context if it changed (pops the old one),
/// or pops it when the tracer stepped aside. One relaxed load and a thread-local read when
/// nothing changes.
#[inline]
pub(crate) fn follow(recorder: &ThreadRecorder) {
    let correlating = cupti::correlating();
    let _ = PUSHED.try_with(|pushed| {
        let had = pushed.get();
        if !correlating && had == 0 {
            return;
        }
        let want = if correlating {
            recorder.kernel_context()
        } else {
            0
        };
        if had != want {
            if had != 0 {
                cupti::pop_context();
            }
            if want != 0 {
                cupti::push_context(want);
            }
            pushed.set(want);
        }
    });
}

/// Before an export or a flush: the kernels CUPTI still holds reach the session; waits
/// `timeout` at most (at once where kernels are not traced). A final export that cannot wait
/// longer says so once.
pub(crate) fn flush(timeout: std::time::Duration, final_export: bool) {
    if !cupti::flush_now(timeout) && final_export {
        warnings::print_warnings(&[format!(
            "the CUDA kernel records still being read after {} ms were left out of the final \
             reports",
            timeout.as_millis()
        )]);
    }
}

/// How long a final export waits for the tracer: a full pool (16 MiB) takes tens of ms.
pub(crate) const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);
/// How long `vllm_profiler_flush` waits for it.
pub(crate) const FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// The tracer's body, on the agent's kernel thread: until `stop` disconnects.
pub(crate) fn trace(session: Arc<Session>, options: cupti::Options, stop: Receiver<()>) {
    let sink = cupti::SessionSink::new(session, |line| warnings::print_warnings(&[line]));
    if let Err(err) = cupti::run(&options, &sink, &stop) {
        warnings::print_warnings(&[format!("CUDA kernels are not traced: {err}")]);
    }
}
