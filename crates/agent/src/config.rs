//! Configuration from the environment (lenient: a bad value becomes the default plus one warning)
//! and from the JSON given to `vllm_profiler_enable` (strict: a bad value is an error and nothing
//! changes). Both are driven by the one table of settings (`table`); `parse` types each value.

pub(crate) mod parse;
pub mod table;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;
use vllm_profiler_core::{ProfilerError, Result, Settings};

use parse::Value;
pub use parse::{env_value, parse_bool, shown};
pub use table::ENABLE_PROFILING;
use table::{Field, ReadBy, DEFAULT_PROCESSES, SETTINGS};

/// Everything the agent is told.
///
/// There is no layer-profiling field: `VLLM_ENABLE_LAYER_PROFILING` and
/// `enable_layer_profiling` are still checked (the README documents them, and a bad value
/// still warns or is rejected), but nothing in the agent ever read what they said; the Python
/// package reads its own keyword and the variable itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub settings: Settings,
    /// `None`: every device.
    pub devices: Option<Vec<u32>>,
    pub nvml_library: Option<PathBuf>,
    pub amdsmi_library: Option<PathBuf>,
    pub prometheus_addr: Option<String>,
    /// How long the endpoint goes on serving a process's last figures after it stopped
    /// publishing them (it exited, or hangs).
    pub prometheus_expiry: Duration,
    /// Globs on the executable's file name of processes that start by themselves.
    pub processes: Vec<glob::Pattern>,
    /// One process of the host samples each device and shares its samples with the others.
    pub shared_sampler: bool,
    /// Where the sampler locks and shared samples live; `None`: the default runtime dir.
    pub runtime_dir: Option<PathBuf>,
    /// CUDA kernels are traced through CUPTI.
    pub kernels: bool,
    /// Tried before CUPTI's default names.
    pub cupti_library: Option<PathBuf>,
    /// The Python package runs the torch profiler for `torch_op_steps` of every
    /// `torch_op_every` steps.
    pub torch_ops: bool,
    pub torch_op_every: u32,
    pub torch_op_steps: u32,
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
            devices: None,
            nvml_library: None,
            amdsmi_library: None,
            prometheus_addr: None,
            prometheus_expiry: Duration::from_secs(60),
            processes: vec![glob::Pattern::new(DEFAULT_PROCESSES).expect("valid glob")],
            shared_sampler: true,
            runtime_dir: None,
            kernels: false,
            cupti_library: None,
            torch_ops: false,
            torch_op_every: table::DEFAULT_TORCH_OP_EVERY,
            torch_op_steps: table::DEFAULT_TORCH_OP_STEPS,
        }
    }
}

impl Config {
    /// The configuration the process environment gives, with one warning per malformed value.
    pub fn from_env() -> (Config, Vec<String>) {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// The configuration `lookup` gives (an environment stand-in for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> (Config, Vec<String>) {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        for setting in SETTINGS.iter().filter(|s| s.read_by == ReadBy::Config) {
            let Some(raw) = lookup(setting.env) else {
                continue;
            };
            if let Some(value) = parse::env_value(setting, &raw, &mut warnings) {
                config.set(setting.field, value);
            }
        }
        if config.torch_op_steps > config.torch_op_every {
            warnings.push(format!(
                "{}={} is more than {}={}: every step is profiled",
                table::TORCH_OP_STEPS,
                config.torch_op_steps,
                table::TORCH_OP_EVERY,
                config.torch_op_every
            ));
        }
        (config, warnings)
    }

    /// Whether an executable with this file name starts profiling by itself.
    pub fn matches_process(&self, exe_file_name: &str) -> bool {
        self.processes.iter().any(|p| p.matches(exe_file_name))
    }

    /// Applies the JSON object given to `vllm_profiler_enable`. Keys are the Python keyword
    /// names of `enable_vllm_profiling`. On any error nothing is changed.
    pub fn apply_json(&mut self, json: &str) -> Result<()> {
        let invalid = |msg: String| ProfilerError::InvalidConfig(msg);
        let value: Json =
            serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let Json::Object(map) = value else {
            return Err(invalid("expected a JSON object".into()));
        };
        let mut next = self.clone();
        for (key, value) in &map {
            let Some(setting) = table::by_json_key(key) else {
                let known: Vec<&str> = table::known_json_keys().collect();
                return Err(invalid(format!(
                    "unknown key {key:?}; known keys: {}",
                    known.join(", ")
                )));
            };
            next.set(setting.field, parse::json_value(setting, key, value)?);
        }
        *self = next;
        Ok(())
    }

    /// Puts a parsed value where its field lives. The table pairs each field with the kind
    /// that makes its value; a field the agent does not act on takes nothing.
    fn set(&mut self, field: Field, value: Value) {
        let s = &mut self.settings;
        match (field, value) {
            (Field::GpuMonitoring, Value::Bool(on)) => s.gpu_monitoring = on,
            (Field::SharedSampler, Value::Bool(on)) => self.shared_sampler = on,
            (Field::OutputDir, Value::Path(dir)) => s.output_dir = dir,
            (Field::NvmlLibrary, Value::Path(path)) => self.nvml_library = Some(path),
            (Field::AmdsmiLibrary, Value::Path(path)) => self.amdsmi_library = Some(path),
            (Field::RuntimeDir, Value::Path(dir)) => self.runtime_dir = Some(dir),
            (Field::Kernels, Value::Bool(on)) => self.kernels = on,
            (Field::CuptiLibrary, Value::Path(path)) => self.cupti_library = Some(path),
            (Field::SampleInterval, Value::Seconds(Some(d))) => s.sample_interval = d,
            (Field::ExportInterval, Value::Seconds(d)) => s.export_interval = d,
            (Field::MaxHistory, Value::Count(n)) => s.max_history = n as usize,
            (Field::TorchOps, Value::Bool(on)) => self.torch_ops = on,
            // The table's bounds keep both within u32.
            (Field::TorchOpEvery, Value::Count(n)) => self.torch_op_every = n as u32,
            (Field::TorchOpSteps, Value::Count(n)) => self.torch_op_steps = n as u32,
            (Field::Devices, Value::Devices(devices)) => self.devices = devices,
            (Field::PrometheusAddr, Value::Address(addr)) => self.prometheus_addr = Some(addr),
            (Field::PrometheusExpiry, Value::Seconds(Some(d))) => self.prometheus_expiry = d,
            (Field::Processes, Value::Globs(patterns)) => self.processes = patterns,
            (Field::LayerProfiling | Field::Switch | Field::RecordShapes | Field::RunId, _) => {}
            (field, value) => debug_assert!(false, "{field:?} cannot take {value:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::PATH_MAX_BYTES;
    use super::table::*;
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

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

    #[test]
    fn every_setting_the_config_reads_takes_a_valid_value() {
        for setting in SETTINGS.iter().filter(|s| s.read_by == ReadBy::Config) {
            let value = match setting.kind {
                Kind::Bool { default } => {
                    if default {
                        "0"
                    } else {
                        "1"
                    }
                }
                Kind::Path => "/tmp/x",
                Kind::Seconds { min, .. } if min > 0.5 => "2",
                Kind::Seconds { .. } => "0.5",
                Kind::Count { .. } => "7",
                Kind::Devices => "1",
                Kind::Address => ":1",
                Kind::Globs => "x*",
                Kind::Name => "run-1",
            };
            let (config, warnings) = from(&[(setting.env, value)]);
            assert!(warnings.is_empty(), "{}: {warnings:?}", setting.env);
            // Layer profiling is checked and dropped (see `Config`).
            let acts = setting.field != Field::LayerProfiling;
            assert_eq!(config != Config::default(), acts, "{}={value}", setting.env);
        }
    }

    #[test]
    fn a_run_id_is_a_short_name() {
        let setting = SETTINGS.iter().find(|s| s.env == RUN_ID).unwrap();
        for (raw, ok) in [
            ("18c2f-4242", true),
            ("prod:a.b_c-1", true),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
            ("", false),
            ("a b", false),
            ("a/b", false),
            ("é", false),
        ] {
            let mut warnings = Vec::new();
            let value = parse::env_value(setting, OsString::from(raw).as_os_str(), &mut warnings);
            assert_eq!(value.is_some(), ok, "{raw:?}");
            assert_eq!(warnings.len(), usize::from(!ok), "{raw:?}: {warnings:?}");
        }
    }

    #[test]
    fn torch_op_windows_longer_than_their_period_say_so() {
        let (config, warnings) = from(&[(TORCH_OP_EVERY, "4"), (TORCH_OP_STEPS, "9")]);
        assert_eq!((config.torch_op_every, config.torch_op_steps), (4, 9));
        assert_eq!(
            warnings,
            [
                "VLLM_PROFILING_TORCH_OP_STEPS=9 is more than VLLM_PROFILING_TORCH_OP_EVERY=4: \
              every step is profiled"
            ]
        );
        assert!(
            from(&[(TORCH_OP_STEPS, "200")]).1.is_empty(),
            "at most the default 200"
        );
    }

    #[test]
    fn an_unknown_json_key_lists_the_known_ones_in_order() {
        let err = Config::default()
            .apply_json(r#"{"colour": 1}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            ProfilerError::InvalidConfig(
                "unknown key \"colour\"; known keys: enable_gpu_monitoring, \
                 enable_layer_profiling, output_dir, sample_interval, export_interval, \
                 auto_export_interval, max_history, enable_torch_op_profiling, devices"
                    .into()
            )
            .to_string()
        );
    }

    #[test]
    fn range_messages_name_the_table_s_bounds() {
        let (_, warnings) = from(&[(MAX_HISTORY, "0")]);
        assert_eq!(
            warnings,
            ["VLLM_PROFILING_MAX_HISTORY=\"0\" is not an integer in [1, 10000000]; using 10000"]
        );
        let err = Config::default()
            .apply_json(r#"{"max_history": 0}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("max_history must be an integer in [1, 10000000], got 0"),
            "{err}"
        );
        let (_, warnings) = from(&[(SAMPLE_INTERVAL, "9999")]);
        assert!(warnings[0].contains("a number of seconds in [0.001, 3600]; using 0.1"));
    }
}
