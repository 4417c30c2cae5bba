//! The fuzzer's input language: what one call does and with which arguments, decoded from
//! bytes by `arbitrary`, and the C arguments each becomes.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;

/// Where reports go: a fresh temporary dir, set once before the first call.
pub(crate) fn output_dir() -> &'static PathBuf {
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
    pub(crate) fn now(&self) -> bool {
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
    SpanSetGpuDuration(Handle, u64),
    StepSetGpuDuration(Handle, u64),
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
pub(crate) const ROLES: [&str; 6] = [
    "api_server",
    "engine_core",
    "worker",
    "process",
    "",
    "Worker",
];

pub(crate) fn c_string(bytes: Vec<u8>) -> CString {
    let bytes: Vec<u8> = bytes.into_iter().filter(|&b| b != 0).collect();
    CString::new(bytes).expect("no NUL left")
}

pub(crate) fn name_arg(name: Name) -> Option<CString> {
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

pub(crate) fn pick(handle: &Handle, known: &[u64]) -> u64 {
    match handle {
        Handle::Recent(n) if !known.is_empty() => {
            known[known.len() - 1 - usize::from(*n) % known.len()]
        }
        Handle::Recent(_) | Handle::Zero => 0,
        Handle::Raw(raw) => *raw,
    }
}

pub(crate) fn json_buf(len: u16) -> Vec<u8> {
    vec![0xAA; usize::from(len)]
}

pub(crate) fn config_arg(config: Config) -> Option<CString> {
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

pub(crate) fn dir_arg(dir: Dir) -> Option<CString> {
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
