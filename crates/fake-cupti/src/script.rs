//! The script: what `FAKE_CUPTI_SCRIPT` holds (inline JSON when it starts with `{`, else the
//! path of a JSON file; unset means the defaults), read once, and the call log it names.
//!
//! ```json
//! {
//!   "version": 24,
//!   "subscribe_error": 39,
//!   "enable_errors": {"CONCURRENT_KERNEL": 27},
//!   "errors": {"cuptiActivityFlushAll": 999},
//!   "omit_symbols": ["cuptiActivityRegisterTimestampCallback"],
//!   "call_log": "/tmp/cupti-calls.log",
//!   "log_hot": false
//! }
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

use serde::Deserialize;
use vllm_profiler_cupti::layout::{kind, CuptiResult, ERROR_UNKNOWN};

pub const SCRIPT_ENV: &str = "FAKE_CUPTI_SCRIPT";

/// The CUPTI functions this library exports: the names `errors` may use.
pub const FUNCTIONS: &[&str] = &[
    "cuptiGetVersion",
    "cuptiGetResultString",
    "cuptiSubscribe",
    "cuptiUnsubscribe",
    "cuptiActivityRegisterCallbacks",
    "cuptiActivityRegisterTimestampCallback",
    "cuptiGetTimestamp",
    "cuptiActivityEnable",
    "cuptiActivityDisable",
    "cuptiActivityFlushAll",
    "cuptiActivityGetNextRecord",
    "cuptiActivityGetNumDroppedRecords",
    "cuptiActivityPushExternalCorrelationId",
    "cuptiActivityPopExternalCorrelationId",
];

/// The activity kinds `enable_errors` may name (a decimal number names any other).
const KIND_NAMES: &[(&str, u32)] = &[
    ("MEMCPY", kind::MEMCPY),
    ("MEMSET", kind::MEMSET),
    ("KERNEL", kind::KERNEL),
    ("DRIVER", kind::DRIVER),
    ("RUNTIME", kind::RUNTIME),
    ("CONCURRENT_KERNEL", kind::CONCURRENT_KERNEL),
    ("OVERHEAD", kind::OVERHEAD),
    ("EXTERNAL_CORRELATION", kind::EXTERNAL_CORRELATION),
    ("INTERNAL_LAUNCH_API", kind::INTERNAL_LAUNCH_API),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptText {
    #[serde(default = "default_version")]
    version: u32,
    #[serde(default)]
    subscribe_error: u32,
    #[serde(default)]
    enable_errors: BTreeMap<String, u32>,
    #[serde(default)]
    errors: BTreeMap<String, u32>,
    #[serde(default)]
    omit_symbols: Vec<String>,
    #[serde(default)]
    call_log: Option<String>,
    #[serde(default)]
    log_hot: bool,
}

fn default_version() -> u32 {
    24
}

/// A script, checked: kind names resolved, function names known.
#[derive(Debug, Clone)]
pub struct Script {
    /// What `cuptiGetVersion` writes.
    pub version: u32,
    /// What `cuptiSubscribe` returns instead of subscribing, when not 0.
    pub subscribe_error: CuptiResult,
    /// Activity kind → what `cuptiActivityEnable` returns for it instead of enabling it.
    pub enable_errors: BTreeMap<u32, CuptiResult>,
    /// Function → what it returns instead of working.
    pub errors: BTreeMap<String, CuptiResult>,
    /// Exports hidden from `dlsym` when the library loads.
    pub omit_symbols: Vec<String>,
    /// A file that gets `<pid> <function>` per call.
    pub call_log: Option<String>,
    /// Whether the per-record and per-span functions are logged too.
    pub log_hot: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            version: default_version(),
            subscribe_error: 0,
            enable_errors: BTreeMap::new(),
            errors: BTreeMap::new(),
            omit_symbols: Vec::new(),
            call_log: None,
            log_hot: false,
        }
    }
}

fn kind_of(name: &str) -> Option<u32> {
    KIND_NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, value)| value)
        .or_else(|| name.parse().ok())
}

impl Script {
    /// Parses a script's JSON text. `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Script, String> {
        let raw: ScriptText = serde_json::from_str(text).map_err(|err| err.to_string())?;
        let mut enable_errors = BTreeMap::new();
        for (name, &code) in &raw.enable_errors {
            let value = kind_of(name).ok_or_else(|| format!("unknown activity kind {name}"))?;
            enable_errors.insert(value, code);
        }
        if let Some(name) = raw.errors.keys().find(|f| !FUNCTIONS.contains(&f.as_str())) {
            return Err(format!("errors: unknown function {name}"));
        }
        Ok(Script {
            version: raw.version,
            subscribe_error: raw.subscribe_error,
            enable_errors,
            errors: raw.errors,
            omit_symbols: raw.omit_symbols,
            call_log: raw.call_log,
            log_hot: raw.log_hot,
        })
    }

    /// Reads the script `FAKE_CUPTI_SCRIPT` gives.
    fn from_env() -> Result<Script, String> {
        let Some(value) = std::env::var_os(SCRIPT_ENV) else {
            return Ok(Script::default());
        };
        let value = value.to_string_lossy().into_owned();
        if value.trim_start().starts_with('{') {
            return Script::parse(&value).map_err(|err| format!("bad inline script: {err}"));
        }
        let text = std::fs::read_to_string(&value)
            .map_err(|err| format!("cannot read script {value}: {err}"))?;
        Script::parse(&text).map_err(|err| format!("bad script {value}: {err}"))
    }

    /// Appends `<pid> <function>` to the call log, if there is one.
    pub fn log(&self, function: &str) {
        let Some(path) = &self.call_log else {
            return;
        };
        let line = format!("{} {function}\n", std::process::id());
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: O_APPEND keeps lines of concurrent processes whole.
            let _ = file.write_all(line.as_bytes());
        }
    }
}

static SCRIPT: OnceLock<Result<Script, String>> = OnceLock::new();

/// The script, read on first use (the library's constructor makes that its load); `Err` when
/// it is bad, which was said once on stderr.
pub fn script() -> Result<&'static Script, CuptiResult> {
    SCRIPT
        .get_or_init(|| {
            let script = Script::from_env();
            if let Err(err) = &script {
                eprintln!("fake CUPTI: {err}; every function returns CUPTI_ERROR_UNKNOWN");
            }
            script
        })
        .as_ref()
        .map_err(|_| ERROR_UNKNOWN)
}

/// Enters the CUPTI function `function`: the script, after logging the call (a `hot` one only
/// with `log_hot`), or the code the function returns instead of working.
pub fn enter(function: &str, hot: bool) -> Result<&'static Script, CuptiResult> {
    let script = script()?;
    if !hot || script.log_hot {
        script.log(function);
    }
    match script.errors.get(function) {
        Some(&code) => Err(code),
        None => Ok(script),
    }
}
