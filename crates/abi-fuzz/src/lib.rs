//! Random sequences of C ABI calls against the agent, and the invariants every sequence must
//! keep. The cargo-fuzz target in `fuzz/` feeds it libFuzzer's inputs; `tests/sequences.rs`
//! feeds it seeded random bytes on stable Rust, so CI runs the same interpreter.
//!
//! Inputs decode (with `arbitrary`) into a list of [`Op`]s: NULL and unknown handles, double
//! ends, ends out of order, names that are NULL, not UTF-8 or past every limit, bad JSON
//! configurations, exports to a file, JSON calls with no or tiny buffers, calls from other
//! threads, all interleaved with enable and disable. The process's agent state lives across
//! inputs, as it would in a host. `vllm_profiler_finish` is left out: it closes the session
//! for good, after which every export writes nothing, and the rest of a long run would fuzz a
//! closed session only (`tests/agent_e2e.rs` covers it).
//!
//! Invariants, checked after every call or sequence (a violation panics, which the fuzzer
//! reports as a crash):
//! - every call returns a documented code, never `VLLM_PROFILER_E_INTERNAL` (a caught panic);
//! - the last error is valid UTF-8;
//! - a JSON call that says it fit wrote that many bytes of valid JSON;
//! - nothing is lost silently: every step and span ever begun is in the totals, or in
//!   `lost_events`, or counted unfinished, or still open (the interpreter ends what it left
//!   open before it checks).

mod abi;
mod checks;
mod ops;

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use arbitrary::{Arbitrary, Unstructured};

pub use checks::calls;
use checks::{check_code, check_conservation, check_json, counted, last_error, E_NOT_ENABLED};
use ops::{
    c_string, config_arg, dir_arg, json_buf, name_arg, output_dir, pick, Op, ThreadOp, ROLES,
};

/// One sequence at a time: the conservation check needs the recorders quiet.
static SERIAL: Mutex<()> = Mutex::new(());

/// Handles this thread got, newest last.
#[derive(Default)]
struct Handles {
    steps: Vec<u64>,
    spans: Vec<u64>,
}

fn begun(handle: u64, list: &mut Vec<u64>) {
    if handle != 0 {
        checks::note_begun();
        list.push(handle);
    }
}

fn run_op(op: Op, handles: &mut Handles) {
    match op {
        Op::Enable(config) => {
            let config = config_arg(config);
            check_code(
                "enable",
                counted(abi::vllm_profiler_enable(config.as_deref())),
            );
        }
        Op::Disable(rarely) => {
            if rarely.now() {
                check_code("disable", counted(abi::vllm_profiler_disable()));
            }
        }
        Op::Flush => {
            check_code("flush", counted(abi::vllm_profiler_flush()));
        }
        Op::IsEnabled => {
            let on = counted(abi::vllm_profiler_is_enabled());
            assert!(on == 0 || on == 1, "is_enabled returned {on}");
        }
        Op::StepBegin(batch, tokens) => {
            let step = counted(abi::vllm_profiler_step_begin(batch, tokens));
            begun(step, &mut handles.steps);
        }
        Op::StepSetCounts(handle, batch, tokens) => {
            let step = pick(&handle, &handles.steps);
            check_code(
                "step_set_counts",
                counted(abi::vllm_profiler_step_set_counts(step, batch, tokens)),
            );
        }
        Op::StepSetEngineStep(handle, engine_step) => {
            let step = pick(&handle, &handles.steps);
            check_code(
                "step_set_engine_step",
                counted(abi::vllm_profiler_step_set_engine_step(step, engine_step)),
            );
        }
        Op::SetRole(index, rank) => {
            let role = ROLES
                .get(usize::from(index))
                .map(|r| c_string(r.as_bytes().to_vec()));
            let code = counted(abi::vllm_profiler_set_role(role.as_deref(), rank));
            let valid = usize::from(index) < 4;
            assert_eq!(
                code == 0,
                valid,
                "set_role({role:?}, {rank}) returned {code}"
            );
            check_code("set_role", code);
        }
        Op::StepEnd(handle) => {
            let step = pick(&handle, &handles.steps);
            check_code("step_end", counted(abi::vllm_profiler_step_end(step)));
        }
        Op::SpanBegin(name) => {
            let name = name_arg(name);
            let span = counted(abi::vllm_profiler_span_begin(name.as_deref()));
            begun(span, &mut handles.spans);
        }
        Op::SpanEnd(handle) => {
            let span = pick(&handle, &handles.spans);
            check_code("span_end", counted(abi::vllm_profiler_span_end(span)));
        }
        Op::SpanEndAnnotated(handle, delta, shapes) => {
            let span = pick(&handle, &handles.spans);
            let shapes = shapes.map(c_string);
            check_code(
                "span_end_annotated",
                counted(abi::vllm_profiler_span_end_annotated(
                    span,
                    delta,
                    shapes.as_deref(),
                )),
            );
        }
        Op::SpanSetGpuDuration(handle, ns) => {
            let span = pick(&handle, &handles.spans);
            let code = counted(abi::vllm_profiler_span_set_gpu_duration(span, ns));
            check_code("span_set_gpu_duration", code);
        }
        Op::StepSetGpuDuration(handle, ns) => {
            let step = pick(&handle, &handles.steps);
            let code = counted(abi::vllm_profiler_step_set_gpu_duration(step, ns));
            check_code("step_set_gpu_duration", code);
        }
        Op::Export(dir, rarely) => {
            if !rarely.now() {
                return;
            }
            let dir = dir_arg(dir);
            let written = counted(abi::vllm_profiler_export(dir.as_deref()));
            // The number of files written (at most the four reports), or an error code.
            assert!(written <= 4, "export returned {written}");
            if written < 0 {
                check_code("export", written);
            }
        }
        Op::Summary(last_n, len) => {
            let mut buf = json_buf(len);
            let got = counted(abi::vllm_profiler_summary_json(last_n, &mut buf));
            check_json("summary_json", got, &buf);
        }
        Op::GpuHistory(device, since, len) => {
            let mut buf = json_buf(len);
            let got = counted(abi::vllm_profiler_gpu_history_json(device, since, &mut buf));
            check_json("gpu_history_json", got, &buf);
        }
        Op::Gpus(len) => {
            // Detection measures the CPU's utilization over a short interval: slow, so once
            // per process.
            static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if DONE.swap(true, Ordering::Relaxed) {
                return;
            }
            let mut buf = json_buf(len);
            let got = counted(abi::vllm_profiler_gpus_json(&mut buf));
            check_json("gpus_json", got, &buf);
        }
        Op::LastError(len) => {
            let mut buf = vec![0xAAu8; usize::from(len)];
            let n = counted(abi::vllm_profiler_last_error(&mut buf));
            assert!(n >= 0, "last_error returned {n}");
            last_error();
        }
        Op::Version => {
            let version = counted(abi::vllm_profiler_version());
            assert!(!version.is_null());
        }
        Op::OnThread(ops) => {
            let main_handles = (handles.steps.clone(), handles.spans.clone());
            // Joined explicitly: that waits for the thread's exit, thread-local destructors
            // (where the agent counts what it left open) included; the end of a scope alone
            // does not.
            std::thread::scope(|scope| {
                let thread = scope.spawn(|| run_thread(ops, main_handles));
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
            });
        }
    }
}

fn run_thread(ops: Vec<ThreadOp>, main: (Vec<u64>, Vec<u64>)) {
    let mut own = Handles::default();
    for op in ops.into_iter().take(64) {
        match op {
            ThreadOp::StepBegin(batch) => {
                begun(
                    counted(abi::vllm_profiler_step_begin(batch, 1)),
                    &mut own.steps,
                );
            }
            // Handles of the main thread are refused here: a step ends where it began.
            ThreadOp::StepEnd(handle) => {
                let all: Vec<u64> = own.steps.iter().chain(&main.0).copied().collect();
                check_code(
                    "step_end",
                    counted(abi::vllm_profiler_step_end(pick(&handle, &all))),
                );
            }
            ThreadOp::SpanBegin(name) => {
                let name = name_arg(name);
                begun(
                    counted(abi::vllm_profiler_span_begin(name.as_deref())),
                    &mut own.spans,
                );
            }
            ThreadOp::SpanEnd(handle) => {
                let all: Vec<u64> = own.spans.iter().chain(&main.1).copied().collect();
                check_code(
                    "span_end",
                    counted(abi::vllm_profiler_span_end(pick(&handle, &all))),
                );
            }
            ThreadOp::Export(rarely) => {
                if !rarely.now() {
                    continue;
                }
                let written = counted(abi::vllm_profiler_export(None));
                assert!(written <= 4, "export returned {written}");
                if written < 0 {
                    check_code("export", written);
                }
            }
        }
    }
    // The thread exits with what it left open: the agent counts it as unfinished.
}

/// Ends everything the main thread still has open (spans first, newest first), so that the
/// conservation check needs no model of the recorder's stacks.
fn end_all(handles: &mut Handles) {
    for span in handles.spans.drain(..).rev() {
        let code = check_code("span_end", counted(abi::vllm_profiler_span_end(span)));
        assert_ne!(code, E_NOT_ENABLED, "profiling is on while ending");
    }
    for step in handles.steps.drain(..).rev() {
        check_code("step_end", counted(abi::vllm_profiler_step_end(step)));
    }
}

/// Runs one input: decodes it into up to 256 calls, makes them, ends what is left open and
/// checks the invariants.
pub fn run(data: &[u8]) {
    output_dir();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut input = Unstructured::new(data);
    let mut handles = Handles::default();
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        if std::env::var_os("ABI_FUZZ_TRACE").is_some() {
            eprintln!("abi-fuzz op: {op:?}");
        }
        run_op(op, &mut handles);
        ops += 1;
    }
    // Ending needs profiling on.
    if counted(abi::vllm_profiler_is_enabled()) == 0 {
        check_code("enable", counted(abi::vllm_profiler_enable(None)));
    }
    end_all(&mut handles);
    check_conservation();
}
