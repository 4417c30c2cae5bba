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

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use arbitrary::{Arbitrary, Unstructured};

const E_NOT_ENABLED: i32 = -1;
const E_INTERNAL: i32 = -9;
/// Every code the header documents: OK, then E_NOT_ENABLED (-1) to E_INTERNAL (-9).
const DOCUMENTED: std::ops::RangeInclusive<i32> = -9..=0;

/// C ABI calls made so far in this process (the fuzzing figure).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Steps and spans begun (a non-zero handle came back) in this process.
static BEGUN: AtomicU64 = AtomicU64::new(0);
/// One sequence at a time: the conservation check needs the recorders quiet.
static SERIAL: Mutex<()> = Mutex::new(());

/// Calls made so far in this process.
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

fn counted<T>(value: T) -> T {
    let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_multiple_of(1_000_000) {
        eprintln!("abi-fuzz: {n} C ABI calls");
    }
    value
}

/// Where reports go: a fresh temporary dir, set once before the first call.
fn output_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vprof-abi-fuzz-{}", std::process::id()));
        std::env::set_var("VLLM_PROFILING_OUTPUT_DIR", &dir);
        std::env::set_var("VLLM_PROFILING_RUNTIME_DIR", dir.join("runtime"));
        // Short histories: every export writes them whole, and a long run exports often.
        std::env::set_var("VLLM_PROFILING_MAX_HISTORY", "8");
        // No GPU library may answer: sampling is not what is fuzzed here.
        std::env::set_var("VLLM_PROFILING_NVML_LIBRARY", dir.join("no-nvml.so"));
        std::env::set_var("VLLM_PROFILING_AMDSMI_LIBRARY", dir.join("no-amd.so"));
        dir
    })
}

/// A handle argument: one that came back earlier, or any number.
#[derive(Debug, Arbitrary)]
pub enum Handle {
    /// The n-th most recent handle this thread got (modulo how many it has).
    Recent(u8),
    Raw(u64),
    Zero,
}

/// A name argument.
#[derive(Debug, Arbitrary)]
pub enum Name {
    Known(u8),
    Bytes(Vec<u8>),
    /// A name at, just past or far past the length limit (1024 bytes).
    Huge(u8),
    Null,
}

/// A configuration for `vllm_profiler_enable`.
#[derive(Debug, Arbitrary)]
pub enum Config {
    Null,
    Valid {
        sample_interval_ms: u16,
        max_history: u8,
        export_interval: bool,
        layers: bool,
    },
    Key(String, f64),
    Bytes(Vec<u8>),
}

/// A directory for `vllm_profiler_export`.
#[derive(Debug, Arbitrary)]
pub enum Dir {
    Null,
    Sub(u8),
    /// A regular file where the dir should be.
    File,
    Bytes(Vec<u8>),
}

/// Exports (and disable, which exports) write every report whole: they run for one op in 8
/// that asks for them, so that a long run spends its time on calls rather than on JSON.
#[derive(Debug, Arbitrary)]
pub struct Rarely(u8);

impl Rarely {
    fn now(&self) -> bool {
        self.0.is_multiple_of(8)
    }
}

#[derive(Debug, Arbitrary)]
pub enum Op {
    Enable(Config),
    Disable(Rarely),
    IsEnabled,
    Flush,
    StepBegin(u32, u32),
    StepSetCounts(Handle, u32, u32),
    StepSetEngineStep(Handle, u64),
    /// A role by its index in `ROLES` (past its end: NULL), and a rank.
    SetRole(u8, i32),
    StepEnd(Handle),
    SpanBegin(Name),
    SpanEnd(Handle),
    SpanEndAnnotated(Handle, f64, Option<Vec<u8>>),
    Export(Dir, Rarely),
    Summary(u32, u16),
    GpuHistory(i32, f64, u16),
    Gpus(u16),
    LastError(u8),
    Version,
    /// These calls on a new thread, which exits with whatever it left open.
    OnThread(Vec<ThreadOp>),
}

/// What another thread does: record, and end handles that belong to the main thread.
#[derive(Debug, Arbitrary)]
pub enum ThreadOp {
    StepBegin(u32),
    StepEnd(Handle),
    SpanBegin(Name),
    SpanEnd(Handle),
    Export(Rarely),
}

const KNOWN_NAMES: [&str; 4] = ["model", "model.layers.0", "model.layers.0.mlp", "lm_head"];
/// The roles of `vllm_profiler_set_role`, and names it must refuse.
const ROLES: [&str; 6] = [
    "api_server",
    "engine_core",
    "worker",
    "process",
    "",
    "Worker",
];

fn c_string(bytes: Vec<u8>) -> CString {
    let bytes: Vec<u8> = bytes.into_iter().filter(|&b| b != 0).collect();
    CString::new(bytes).expect("no NUL left")
}

fn name_arg(name: Name) -> Option<CString> {
    match name {
        Name::Known(i) => Some(c_string(KNOWN_NAMES[usize::from(i) % 4].into())),
        // One byte of 16 values, half of them the start of a UTF-8 sequence that cannot be
        // whole: bad names without growing the name table, which every summary and export
        // walks whole.
        Name::Bytes(mut bytes) => {
            bytes.truncate(1);
            if let Some(first) = bytes.first_mut() {
                *first &= 0x87;
            }
            Some(c_string(bytes))
        }
        Name::Huge(n) => {
            let len = [1023, 1024, 1025, 65_536][usize::from(n) % 4];
            Some(c_string(vec![b'x'; len]))
        }
        Name::Null => None,
    }
}

fn check_code(call: &str, code: i32) -> i32 {
    assert!(DOCUMENTED.contains(&code), "{call} returned {code}");
    assert_ne!(code, E_INTERNAL, "{call}: {}", last_error());
    code
}

/// The thread's last error, checked to be UTF-8.
fn last_error() -> String {
    let mut buf = vec![0u8; 512];
    let n = counted(abi::vllm_profiler_last_error(&mut buf));
    assert!(n >= 0, "last_error returned {n}");
    let n = (n as usize).min(buf.len() - 1);
    String::from_utf8(buf[..n].to_vec()).expect("the last error is UTF-8")
}

/// Checks a JSON call's result: a length that fit names that many bytes of valid JSON.
fn check_json(call: &str, got: i64, buf: &[u8]) {
    if got < 0 {
        check_code(call, i32::try_from(got).expect("an error code"));
        return;
    }
    let got = got as usize;
    if got < buf.len() {
        assert_eq!(buf[got], 0, "{call}: not NUL-terminated");
        serde_json::from_slice::<serde_json::Value>(&buf[..got])
            .unwrap_or_else(|e| panic!("{call}: invalid JSON: {e}"));
    }
}

/// Handles this thread got, newest last.
#[derive(Default)]
struct Handles {
    steps: Vec<u64>,
    spans: Vec<u64>,
}

fn pick(handle: &Handle, known: &[u64]) -> u64 {
    match handle {
        Handle::Recent(n) if !known.is_empty() => {
            known[known.len() - 1 - usize::from(*n) % known.len()]
        }
        Handle::Recent(_) | Handle::Zero => 0,
        Handle::Raw(raw) => *raw,
    }
}

fn begun(handle: u64, list: &mut Vec<u64>) {
    if handle != 0 {
        BEGUN.fetch_add(1, Ordering::Relaxed);
        list.push(handle);
    }
}

fn json_buf(len: u16) -> Vec<u8> {
    vec![0xAA; usize::from(len)]
}

fn config_arg(config: Config) -> Option<CString> {
    match config {
        Config::Null => None,
        Config::Valid {
            sample_interval_ms,
            max_history,
            export_interval,
            layers,
        } => {
            let mut json = serde_json::json!({
                "sample_interval": f64::from(sample_interval_ms.max(1)) / 1000.0,
                "max_history": u64::from(max_history),
                "enable_layer_profiling": layers,
                "enable_gpu_monitoring": false,
            });
            if export_interval {
                json["export_interval"] = serde_json::json!(0.05);
            }
            Some(c_string(json.to_string().into_bytes()))
        }
        Config::Key(key, value) => Some(c_string(
            serde_json::json!({ key: value }).to_string().into_bytes(),
        )),
        Config::Bytes(bytes) => Some(c_string(bytes)),
    }
}

fn dir_arg(dir: Dir) -> Option<CString> {
    let base = output_dir();
    match dir {
        Dir::Null => None,
        Dir::Sub(n) => Some(c_string(
            base.join(format!("sub{}", n % 4))
                .into_os_string()
                .into_encoded_bytes(),
        )),
        Dir::File => {
            let file = base.join("a-file");
            let _ = std::fs::create_dir_all(base);
            let _ = std::fs::write(&file, b"not a dir");
            Some(c_string(file.into_os_string().into_encoded_bytes()))
        }
        Dir::Bytes(bytes) => {
            let mut path = base.clone().into_os_string().into_encoded_bytes();
            path.push(b'/');
            path.extend(bytes.into_iter().filter(|&b| b != b'.').take(64));
            Some(c_string(path))
        }
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

/// Every step and span begun is accounted for: kept, lost, or unfinished.
fn check_conservation() {
    let mut buf = vec![0u8; 1 << 16];
    let got = loop {
        let got = counted(abi::vllm_profiler_summary_json(0, &mut buf));
        if got < 0 || (got as usize) < buf.len() {
            break got;
        }
        buf.resize(got as usize * 2, 0);
    };
    if got < 0 {
        // No session yet: nothing was ever begun.
        assert_eq!(BEGUN.load(Ordering::Relaxed), 0, "{}", last_error());
        return;
    }
    let summary: vllm_profiler_format::PerformanceSummary =
        serde_json::from_slice(&buf[..got as usize]).expect("the summary parses");
    let c = &summary.counters;
    let accounted = summary.total_steps
        + summary.empty_steps
        + c.total_spans
        + c.lost_events
        + c.unfinished_steps
        + c.unfinished_spans;
    assert_eq!(
        accounted,
        BEGUN.load(Ordering::Relaxed),
        "steps and spans begun vs accounted: {summary:?}"
    );
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
