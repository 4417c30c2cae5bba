//! Configuration from the environment (lenient: a bad value becomes the default plus one warning)
//! and from the JSON given to `vllm_profiler_enable` (strict: a bad value is an error and nothing
//! changes).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vllm_profiler_core::{ProfilerError, Result, Settings};

pub const ENABLE_PROFILING: &str = "VLLM_ENABLE_PROFILING";
pub const ENABLE_GPU_MONITORING: &str = "VLLM_ENABLE_GPU_MONITORING";
pub const ENABLE_LAYER_PROFILING: &str = "VLLM_ENABLE_LAYER_PROFILING";
pub const OUTPUT_DIR: &str = "VLLM_PROFILING_OUTPUT_DIR";
pub const SAMPLE_INTERVAL: &str = "VLLM_PROFILING_SAMPLE_INTERVAL";
pub const EXPORT_INTERVAL: &str = "VLLM_PROFILING_EXPORT_INTERVAL";
pub const MAX_HISTORY: &str = "VLLM_PROFILING_MAX_HISTORY";
pub const NVML_LIBRARY: &str = "VLLM_PROFILING_NVML_LIBRARY";
pub const AMDSMI_LIBRARY: &str = "VLLM_PROFILING_AMDSMI_LIBRARY";
pub const DEVICES: &str = "VLLM_PROFILING_DEVICES";
pub const PROMETHEUS_ADDR: &str = "VLLM_PROFILING_PROMETHEUS_ADDR";
pub const PROCESSES: &str = "VLLM_PROFILING_PROCESSES";
pub const SHARED_SAMPLER: &str = "VLLM_PROFILING_SHARED_SAMPLER";
pub const RUNTIME_DIR: &str = "VLLM_PROFILING_RUNTIME_DIR";

const SAMPLE_INTERVAL_RANGE: (f64, f64) = (0.001, 3600.0);
const EXPORT_INTERVAL_RANGE: (f64, f64) = (0.01, 86_400.0);
const MAX_HISTORY_RANGE: (u64, u64) = (1, 10_000_000);
const DEFAULT_PROCESSES: &str = "python*";
/// The longest path the kernel takes (`PATH_MAX` less the NUL): a longer one can never work.
const PATH_MAX_BYTES: usize = 4095;
/// How much of a bad value a warning shows, in characters.
const SHOWN_CHARS: usize = 64;

/// A value as a warning shows it: quoted, lossy UTF-8, cut to its first 64 characters (with
/// its length in bytes) so that a huge value still makes one short line.
pub fn shown(value: &OsStr) -> String {
    let text = value.to_string_lossy();
    if text.chars().count() <= SHOWN_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(SHOWN_CHARS).collect();
    format!("{head:?}... ({} bytes)", value.len())
}

/// Everything the agent is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub settings: Settings,
    pub layer_profiling: bool,
    /// `None`: every device.
    pub devices: Option<Vec<u32>>,
    pub nvml_library: Option<PathBuf>,
    pub amdsmi_library: Option<PathBuf>,
    pub prometheus_addr: Option<String>,
    /// Globs on the executable's file name of processes that start by themselves.
    pub processes: Vec<glob::Pattern>,
    /// One process of the host samples each device and shares its samples with the others.
    pub shared_sampler: bool,
    /// Where the sampler locks and shared samples live; `None`: the default runtime dir.
    pub runtime_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // The agent keeps the crash-safe journal: a killed process's reports can be
            // recovered from it.
            settings: Settings {
                journal: true,
                ..Settings::default()
            },
            layer_profiling: false,
            devices: None,
            nvml_library: None,
            amdsmi_library: None,
            prometheus_addr: None,
            processes: vec![glob::Pattern::new(DEFAULT_PROCESSES).expect("valid glob")],
            shared_sampler: true,
            runtime_dir: None,
        }
    }
}

/// `Some(true)` for 1/true/yes/on, `Some(false)` for 0/false/no/off (any case), else `None`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Reads the environment through `lookup`, collecting one warning per malformed variable.
struct EnvReader<F> {
    lookup: F,
    warnings: Vec<String>,
}

impl<F: Fn(&str) -> Option<OsString>> EnvReader<F> {
    fn warn(&mut self, var: &str, value: &OsStr, expected: &str, used: &str) {
        self.warnings.push(format!(
            "{var}={} is not {expected}; using {used}",
            shown(value)
        ));
    }

    fn string(&mut self, var: &str) -> Option<(OsString, Option<String>)> {
        let raw = (self.lookup)(var)?;
        let text = raw.to_str().map(str::to_owned);
        Some((raw, text))
    }

    fn bool(&mut self, var: &str, default: bool) -> bool {
        let Some((raw, text)) = self.string(var) else {
            return default;
        };
        match text.as_deref().and_then(parse_bool) {
            Some(v) => v,
            None => {
                let used = if default { "on" } else { "off" };
                self.warn(
                    var,
                    &raw,
                    "a boolean (1/true/yes/on or 0/false/no/off)",
                    used,
                );
                default
            }
        }
    }

    /// `None` when unset or malformed (with a warning saying `used` instead).
    fn seconds(&mut self, var: &str, range: (f64, f64), used: &str) -> Option<Duration> {
        let (raw, text) = self.string(var)?;
        match text
            .as_deref()
            .map(str::trim)
            .and_then(|t| t.parse::<f64>().ok())
        {
            Some(v) if v.is_finite() && v >= range.0 && v <= range.1 => {
                Some(Duration::from_secs_f64(v))
            }
            _ => {
                let expected = format!("a number of seconds in [{}, {}]", range.0, range.1);
                self.warn(var, &raw, &expected, used);
                None
            }
        }
    }

    fn path(&mut self, var: &str) -> Option<PathBuf> {
        let raw = (self.lookup)(var)?;
        if raw.is_empty() {
            self.warnings
                .push(format!("{var} is set but empty; using the default"));
            return None;
        }
        if let Some(expected) = unusable_path(raw.as_encoded_bytes()) {
            self.warn(var, &raw, &expected, "the default");
            return None;
        }
        Some(PathBuf::from(raw))
    }
}

/// What a path must be that `raw` is not, if `raw` can never be one the kernel takes: the one
/// rule for a path from the environment and from the JSON configuration.
fn unusable_path(raw: &[u8]) -> Option<String> {
    if raw.len() > PATH_MAX_BYTES {
        Some(format!("a path (at most {PATH_MAX_BYTES} bytes)"))
    } else if raw.contains(&0) {
        Some("a path (no NUL byte)".to_owned())
    } else {
        None
    }
}

impl Config {
    /// The configuration the process environment gives, with one warning per malformed value.
    pub fn from_env() -> (Config, Vec<String>) {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// The configuration `lookup` gives (an environment stand-in for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> (Config, Vec<String>) {
        let mut env = EnvReader {
            lookup,
            warnings: Vec::new(),
        };
        let mut config = Config::default();
        let defaults = Settings::default();
        let s = &mut config.settings;

        s.gpu_monitoring = env.bool(ENABLE_GPU_MONITORING, true);
        config.layer_profiling = env.bool(ENABLE_LAYER_PROFILING, false);
        if let Some(dir) = env.path(OUTPUT_DIR) {
            s.output_dir = dir;
        }
        if let Some(d) = env.seconds(SAMPLE_INTERVAL, SAMPLE_INTERVAL_RANGE, "0.1") {
            s.sample_interval = d;
        }
        s.export_interval =
            env.seconds(EXPORT_INTERVAL, EXPORT_INTERVAL_RANGE, "no periodic export");
        if let Some((raw, text)) = env.string(MAX_HISTORY) {
            match text
                .as_deref()
                .map(str::trim)
                .and_then(|t| t.parse::<u64>().ok())
            {
                Some(n) if (MAX_HISTORY_RANGE.0..=MAX_HISTORY_RANGE.1).contains(&n) => {
                    s.max_history = n as usize
                }
                _ => env.warn(
                    MAX_HISTORY,
                    &raw,
                    "an integer in [1, 10000000]",
                    &defaults.max_history.to_string(),
                ),
            }
        }
        config.nvml_library = env.path(NVML_LIBRARY);
        config.amdsmi_library = env.path(AMDSMI_LIBRARY);
        if let Some((raw, text)) = env.string(DEVICES) {
            match text.as_deref().map(parse_devices) {
                Some(Ok(devices)) => config.devices = devices,
                _ => env.warn(
                    DEVICES,
                    &raw,
                    "a comma-separated list of GPU indices",
                    "all devices",
                ),
            }
        }
        if let Some((raw, text)) = env.string(PROMETHEUS_ADDR) {
            match text.as_deref().and_then(parse_addr) {
                Some(addr) => config.prometheus_addr = Some(addr),
                _ => env.warn(PROMETHEUS_ADDR, &raw, "a host:port address", "no endpoint"),
            }
        }
        if let Some((raw, text)) = env.string(PROCESSES) {
            match text.as_deref().map(parse_globs) {
                Some(Ok(patterns)) => config.processes = patterns,
                _ => env.warn(
                    PROCESSES,
                    &raw,
                    "a comma-separated list of file-name globs",
                    DEFAULT_PROCESSES,
                ),
            }
        }
        config.shared_sampler = env.bool(SHARED_SAMPLER, true);
        config.runtime_dir = env.path(RUNTIME_DIR);
        (config, env.warnings)
    }

    /// Whether an executable with this file name starts profiling by itself.
    pub fn matches_process(&self, exe_file_name: &str) -> bool {
        self.processes.iter().any(|p| p.matches(exe_file_name))
    }

    /// Applies the JSON object given to `vllm_profiler_enable`. Keys are the Python keyword
    /// names of `enable_vllm_profiling`. On any error nothing is changed.
    pub fn apply_json(&mut self, json: &str) -> Result<()> {
        let invalid = |msg: String| ProfilerError::InvalidConfig(msg);
        let value: Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(invalid("expected a JSON object".into()));
        };
        let mut next = self.clone();
        for (key, value) in &map {
            let s = &mut next.settings;
            match key.as_str() {
                "enable_gpu_monitoring" => s.gpu_monitoring = json_bool(key, value)?,
                "enable_layer_profiling" => next.layer_profiling = json_bool(key, value)?,
                "output_dir" => match value {
                    Value::String(dir) if !dir.is_empty() => match unusable_path(dir.as_bytes()) {
                        Some(expected) => {
                            let got = shown(OsStr::new(dir));
                            return Err(invalid(format!("{key} {got} is not {expected}")));
                        }
                        None => s.output_dir = PathBuf::from(dir),
                    },
                    _ => return Err(invalid(format!("{key} must be a non-empty string"))),
                },
                "sample_interval" => {
                    s.sample_interval = json_seconds(key, value, SAMPLE_INTERVAL_RANGE)?
                }
                "export_interval" | "auto_export_interval" => {
                    s.export_interval = match value {
                        Value::Null => None,
                        v => Some(json_seconds(key, v, EXPORT_INTERVAL_RANGE)?),
                    }
                }
                "max_history" => {
                    s.max_history = match value.as_u64() {
                        Some(n) if (MAX_HISTORY_RANGE.0..=MAX_HISTORY_RANGE.1).contains(&n) => {
                            n as usize
                        }
                        _ => {
                            return Err(invalid(format!(
                                "{key} must be an integer in [1, 10000000], got {value}"
                            )))
                        }
                    }
                }
                "devices" => next.devices = json_devices(key, value)?,
                _ => {
                    return Err(invalid(format!(
                        "unknown key {key:?}; known keys: {}",
                        KNOWN_KEYS.join(", ")
                    )))
                }
            }
        }
        *self = next;
        Ok(())
    }
}

const KNOWN_KEYS: &[&str] = &[
    "enable_gpu_monitoring",
    "enable_layer_profiling",
    "output_dir",
    "sample_interval",
    "export_interval",
    "auto_export_interval",
    "max_history",
    "devices",
];

fn parse_devices(text: &str) -> std::result::Result<Option<Vec<u32>>, ()> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    let devices: std::result::Result<Vec<u32>, _> =
        text.split(',').map(|d| d.trim().parse::<u32>()).collect();
    match devices {
        Ok(d) if !d.is_empty() => Ok(Some(d)),
        _ => Err(()),
    }
}

/// `host:port` (the host a name, an IPv4 address or a bracketed IPv6 one), trimmed.
/// `host:port`, or `:port` for loopback (`127.0.0.1:port`): the endpoint is exposed beyond
/// the host only when a host says so.
fn parse_addr(text: &str) -> Option<String> {
    let text = text.trim();
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if host.is_empty() {
        return Some(format!("127.0.0.1:{port}"));
    }
    let valid_host = !host.is_empty()
        && host.len() <= 255
        && !host.chars().any(|c| c.is_whitespace() || c.is_control());
    valid_host.then(|| text.to_owned())
}

fn parse_globs(text: &str) -> std::result::Result<Vec<glob::Pattern>, ()> {
    let patterns: std::result::Result<Vec<_>, _> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(glob::Pattern::new)
        .collect();
    match patterns {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err(()),
    }
}

fn json_bool(key: &str, value: &Value) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| ProfilerError::InvalidConfig(format!("{key} must be true or false")))
}

fn json_seconds(key: &str, value: &Value, range: (f64, f64)) -> Result<Duration> {
    match value.as_f64() {
        Some(v) if v >= range.0 && v <= range.1 => Ok(Duration::from_secs_f64(v)),
        _ => Err(ProfilerError::InvalidConfig(format!(
            "{key} must be a number of seconds in [{}, {}], got {value}",
            range.0, range.1
        ))),
    }
}

fn json_devices(key: &str, value: &Value) -> Result<Option<Vec<u32>>> {
    match value {
        Value::Null => Ok(None),
        Value::Array(items) if items.is_empty() => Err(ProfilerError::InvalidConfig(format!(
            "{key} must list at least one GPU index (null: every device)"
        ))),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ProfilerError::InvalidConfig(format!(
                            "{key} must be a list of GPU indices, got {value}"
                        ))
                    })
            })
            .collect::<Result<Vec<u32>>>()
            .map(Some),
        _ => Err(ProfilerError::InvalidConfig(format!(
            "{key} must be a list of GPU indices or null"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> (Config, Vec<String>) {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_spec() {
        let (config, warnings) = from(&[]);
        assert!(warnings.is_empty());
        let s = &config.settings;
        assert!(s.gpu_monitoring);
        assert!(!config.layer_profiling);
        assert_eq!(s.output_dir, PathBuf::from("./profiling_results"));
        assert_eq!(s.sample_interval, Duration::from_millis(100));
        assert_eq!(s.export_interval, None);
        assert_eq!(s.max_history, 10_000);
        assert!(config.matches_process("python3.11"));
        assert!(!config.matches_process("bash"));
    }

    #[test]
    fn truthy_values_any_case() {
        for v in ["1", "true", "YES", "On"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["0", "false", "No", "OFF"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn valid_values_are_taken() {
        let (config, warnings) = from(&[
            (ENABLE_GPU_MONITORING, "off"),
            (ENABLE_LAYER_PROFILING, "yes"),
            (OUTPUT_DIR, "/tmp/out"),
            (SAMPLE_INTERVAL, "0.005"),
            (EXPORT_INTERVAL, "2.5"),
            (MAX_HISTORY, "50"),
            (DEVICES, "0, 2"),
            (PROCESSES, "step_*,python*"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let s = &config.settings;
        assert!(!s.gpu_monitoring);
        assert!(config.layer_profiling);
        assert_eq!(s.output_dir, PathBuf::from("/tmp/out"));
        assert_eq!(s.sample_interval, Duration::from_millis(5));
        assert_eq!(s.export_interval, Some(Duration::from_millis(2500)));
        assert_eq!(s.max_history, 50);
        assert_eq!(config.devices, Some(vec![0, 2]));
        assert!(config.matches_process("step_test"));
    }

    #[test]
    fn each_malformed_value_is_one_warning_naming_var_value_and_default() {
        let bad = [
            (ENABLE_GPU_MONITORING, "maybe", "using on"),
            (SAMPLE_INTERVAL, "NaN", "using 0.1"),
            (SAMPLE_INTERVAL, "-1", "using 0.1"),
            (SAMPLE_INTERVAL, "0", "using 0.1"),
            (SAMPLE_INTERVAL, "1e300", "using 0.1"),
            (SAMPLE_INTERVAL, "", "using 0.1"),
            (EXPORT_INTERVAL, "soon", "using no periodic export"),
            (MAX_HISTORY, "0", "using 10000"),
            (MAX_HISTORY, "-5", "using 10000"),
            (MAX_HISTORY, "99999999999999999999", "using 10000"),
            (DEVICES, "0,x", "using all devices"),
            (PROCESSES, "[", "using python*"),
            (OUTPUT_DIR, "", "using the default"),
            (PROMETHEUS_ADDR, "NaN", "using no endpoint"),
            (PROMETHEUS_ADDR, "localhost:99999", "using no endpoint"),
            (PROMETHEUS_ADDR, ":x", "using no endpoint"),
        ];
        for (var, value, used) in bad {
            let (config, warnings) = from(&[(var, value)]);
            assert_eq!(warnings.len(), 1, "{var}={value}: {warnings:?}");
            assert!(warnings[0].contains(var), "{}", warnings[0]);
            assert!(warnings[0].contains(used), "{}", warnings[0]);
            let defaults = Config::default();
            assert_eq!(config.settings, defaults.settings, "{var}={value}");
            assert_eq!(config.devices, None);
        }
    }

    #[test]
    fn host_port_addresses_are_taken() {
        for addr in [
            "127.0.0.1:9090",
            "localhost:0",
            "[::1]:8000",
            " example.org:80 ",
        ] {
            let (config, warnings) = from(&[(PROMETHEUS_ADDR, addr)]);
            assert!(warnings.is_empty(), "{addr}: {warnings:?}");
            assert_eq!(config.prometheus_addr.as_deref(), Some(addr.trim()));
        }
        // No host: loopback, never every interface.
        let (config, warnings) = from(&[(PROMETHEUS_ADDR, ":9090")]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.prometheus_addr.as_deref(), Some("127.0.0.1:9090"));
    }

    #[test]
    fn a_huge_value_makes_one_short_warning_and_an_overlong_path_is_not_taken() {
        let huge = "x".repeat(100_000);
        for var in [SAMPLE_INTERVAL, OUTPUT_DIR, NVML_LIBRARY, AMDSMI_LIBRARY] {
            let (config, warnings) = from(&[(var, &huge)]);
            assert_eq!(warnings.len(), 1, "{var}");
            assert!(warnings[0].len() < 300, "{var}: {}", warnings[0]);
            assert!(warnings[0].contains(var) && warnings[0].contains("100000 bytes"));
            assert_eq!(config, Config::default(), "{var}");
        }
        let longest = "y".repeat(PATH_MAX_BYTES);
        let (config, warnings) = from(&[(OUTPUT_DIR, &longest)]);
        assert!(warnings.is_empty());
        assert_eq!(config.settings.output_dir, PathBuf::from(longest));
    }

    #[test]
    fn non_utf8_values_fall_back_with_a_warning() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(vec![0xff, 0xfe]);
        let (config, warnings) = Config::from_lookup(|name| {
            (name == SAMPLE_INTERVAL || name == PROCESSES).then(|| raw.clone())
        });
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn json_overrides_and_rejects_without_changing_anything() {
        let mut config = Config::default();
        config
            .apply_json(
                r#"{"output_dir": "/x", "sample_interval": 0.5, "auto_export_interval": 3,
                    "enable_gpu_monitoring": false, "max_history": 7, "devices": [1]}"#,
            )
            .unwrap();
        assert_eq!(config.settings.output_dir, PathBuf::from("/x"));
        assert_eq!(config.settings.sample_interval, Duration::from_millis(500));
        assert_eq!(
            config.settings.export_interval,
            Some(Duration::from_secs(3))
        );
        assert!(!config.settings.gpu_monitoring);
        assert_eq!(config.settings.max_history, 7);
        assert_eq!(config.devices, Some(vec![1]));

        let before = config.clone();
        for bad in [
            "not json",
            "[1]",
            r#"{"output_dir": "/y", "sample_interval": -1}"#,
            r#"{"colour": "blue"}"#,
            r#"{"max_history": 0}"#,
            r#"{"enable_gpu_monitoring": "yes"}"#,
            r#"{"devices": ["a"]}"#,
            r#"{"devices": []}"#,
        ] {
            let err = config.apply_json(bad).unwrap_err();
            assert_eq!(err.code(), -4, "{bad}");
            assert_eq!(config, before, "{bad} changed the config");
        }
    }

    #[test]
    fn json_output_dir_is_held_to_the_environments_rules() {
        let longest = "y".repeat(PATH_MAX_BYTES);
        let mut config = Config::default();
        config
            .apply_json(&serde_json::json!({ "output_dir": longest }).to_string())
            .unwrap();
        assert_eq!(config.settings.output_dir, PathBuf::from(&longest));
        let before = config.clone();
        let too_long = "y".repeat(10 << 20);
        for (dir, said) in [
            (too_long.as_str(), "is not a path (at most 4095 bytes)"),
            ("/tmp/a\u{0}b", "is not a path (no NUL byte)"),
        ] {
            let err = config
                .apply_json(&serde_json::json!({ "output_dir": dir }).to_string())
                .unwrap_err();
            let message = err.to_string();
            assert!(message.contains(said), "{message}");
            // Never the whole 10 MB back: a shown value is cut.
            assert!(message.len() < 300, "{} bytes", message.len());
            assert_eq!(config, before);
        }
        // The environment: the same rule (it cannot hold a NUL).
        let (env_config, warnings) = from(&[(OUTPUT_DIR, &too_long)]);
        assert_eq!(
            env_config.settings.output_dir,
            Config::default().settings.output_dir
        );
        assert!(warnings[0].contains("is not a path (at most 4095 bytes)"));
    }
}
