//! The one table of every setting: its environment variable, its JSON keys, what kind of value
//! it takes and what it is when unset. Environment parsing, JSON parsing, the list of known JSON
//! keys and the checks against the README and the Python package all read it.

pub const ENABLE_PROFILING: &str = "VLLM_ENABLE_PROFILING";
pub const ENABLE_GPU_MONITORING: &str = "VLLM_ENABLE_GPU_MONITORING";
pub const ENABLE_LAYER_PROFILING: &str = "VLLM_ENABLE_LAYER_PROFILING";
pub const RECORD_SHAPES: &str = "VLLM_PROFILING_RECORD_SHAPES";
pub const OUTPUT_DIR: &str = "VLLM_PROFILING_OUTPUT_DIR";
pub const SAMPLE_INTERVAL: &str = "VLLM_PROFILING_SAMPLE_INTERVAL";
pub const EXPORT_INTERVAL: &str = "VLLM_PROFILING_EXPORT_INTERVAL";
pub const MAX_HISTORY: &str = "VLLM_PROFILING_MAX_HISTORY";
pub const NVML_LIBRARY: &str = "VLLM_PROFILING_NVML_LIBRARY";
pub const AMDSMI_LIBRARY: &str = "VLLM_PROFILING_AMDSMI_LIBRARY";
pub const DEVICES: &str = "VLLM_PROFILING_DEVICES";
pub const PROMETHEUS_ADDR: &str = "VLLM_PROFILING_PROMETHEUS_ADDR";
pub const PROMETHEUS_EXPIRY: &str = "VLLM_PROFILING_PROMETHEUS_EXPIRY";
pub const PROCESSES: &str = "VLLM_PROFILING_PROCESSES";
pub const SHARED_SAMPLER: &str = "VLLM_PROFILING_SHARED_SAMPLER";
pub const RUNTIME_DIR: &str = "VLLM_PROFILING_RUNTIME_DIR";
pub const RUN_ID: &str = "VLLM_PROFILING_RUN_ID";
pub const KERNELS: &str = "VLLM_PROFILING_KERNELS";
pub const CUPTI_LIBRARY: &str = "VLLM_PROFILING_CUPTI_LIBRARY";
pub const TORCH_OPS: &str = "VLLM_PROFILING_TORCH_OPS";
pub const TORCH_OP_EVERY: &str = "VLLM_PROFILING_TORCH_OP_EVERY";
pub const TORCH_OP_STEPS: &str = "VLLM_PROFILING_TORCH_OP_STEPS";

pub const DEFAULT_PROCESSES: &str = "python*";

/// What a value must be, and its bounds where it has some.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// 1/true/yes/on or 0/false/no/off; JSON true or false. `default` is the value when unset.
    Bool { default: bool },
    /// A path the kernel can take; JSON a non-empty string.
    Path,
    /// Seconds in `[min, max]`. `nullable`: JSON null turns it off.
    Seconds { min: f64, max: f64, nullable: bool },
    /// An integer in `[min, max]`.
    Count { min: u64, max: u64 },
    /// Comma-separated GPU indices or `all`; JSON a list of indices or null.
    Devices,
    /// `host:port` or `:port`.
    Address,
    /// Comma-separated file-name globs.
    Globs,
    /// A name of 1 to 64 letters, digits, `.`, `_`, `-` and `:`.
    Name,
}

/// Who reads a variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadBy {
    /// The master switch: the runtime reads it at load, before any other setting.
    Runtime,
    /// `Config::from_lookup` and, through its JSON keys, `Config::apply_json`.
    Config,
    /// Only the Python package (the agent never looks at it).
    Python,
}

/// Which field of the configuration a setting fills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    Switch,
    GpuMonitoring,
    LayerProfiling,
    RecordShapes,
    OutputDir,
    SampleInterval,
    ExportInterval,
    MaxHistory,
    NvmlLibrary,
    AmdsmiLibrary,
    Devices,
    PrometheusAddr,
    PrometheusExpiry,
    Processes,
    SharedSampler,
    RuntimeDir,
    RunId,
    Kernels,
    CuptiLibrary,
    TorchOps,
    TorchOpEvery,
    TorchOpSteps,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub env: &'static str,
    /// Its keys in the JSON given to `vllm_profiler_enable` (Python's keyword names).
    pub json: &'static [&'static str],
    pub field: Field,
    pub kind: Kind,
    pub read_by: ReadBy,
    /// What a warning says is used instead of a malformed environment value.
    pub fallback: &'static str,
    /// The README's default column, verbatim.
    pub readme_default: &'static str,
}

const SAMPLE_SECONDS: Kind = Kind::Seconds {
    min: 0.001,
    max: 3600.0,
    nullable: false,
};
const EXPORT_SECONDS: Kind = Kind::Seconds {
    min: 0.01,
    max: 86_400.0,
    nullable: true,
};
const EXPIRY_SECONDS: Kind = Kind::Seconds {
    min: 1.0,
    max: 86_400.0,
    nullable: false,
};
const MAX_HISTORY_COUNT: Kind = Kind::Count {
    min: 1,
    max: 10_000_000,
};
/// Steps from one torch profiler window's start to the next's.
const TORCH_OP_EVERY_COUNT: Kind = Kind::Count {
    min: 2,
    max: 1_000_000,
};
/// Steps a torch profiler window profiles (at most the steps between two windows' starts).
const TORCH_OP_STEPS_COUNT: Kind = Kind::Count {
    min: 1,
    max: 1_000_000,
};
/// The defaults of the torch profiler's windows: 5 steps of every 200, which keeps the host's
/// slowdown under 5 % on a CPU model of 10 us ops (BENCHMARKS.md, P12).
pub const DEFAULT_TORCH_OP_EVERY: u32 = 200;
pub const DEFAULT_TORCH_OP_STEPS: u32 = 5;

const fn setting(
    env: &'static str,
    json: &'static [&'static str],
    field: Field,
    kind: Kind,
    read_by: ReadBy,
    fallback: &'static str,
    readme_default: &'static str,
) -> Setting {
    Setting {
        env,
        json,
        field,
        kind,
        read_by,
        fallback,
        readme_default,
    }
}

use Field as F;
use ReadBy::{Config as C, Python as P, Runtime as R};

/// Every setting, in the order the environment is read (its warnings come in this order) and
/// the JSON keys are listed.
pub const SETTINGS: &[Setting] = &[
    setting(
        ENABLE_PROFILING,
        &[],
        F::Switch,
        Kind::Bool { default: false },
        R,
        "off",
        "off",
    ),
    setting(
        ENABLE_GPU_MONITORING,
        &["enable_gpu_monitoring"],
        F::GpuMonitoring,
        Kind::Bool { default: true },
        C,
        "on",
        "on",
    ),
    // The agent checks the value (a malformed one warns, a wrong JSON type is rejected) but
    // acts on none: the Python package hooks the layers, reading the variable and its own
    // keyword itself.
    setting(
        ENABLE_LAYER_PROFILING,
        &["enable_layer_profiling"],
        F::LayerProfiling,
        Kind::Bool { default: false },
        C,
        "off",
        "off",
    ),
    setting(
        RECORD_SHAPES,
        &[],
        F::RecordShapes,
        Kind::Bool { default: false },
        P,
        "off",
        "off",
    ),
    setting(
        OUTPUT_DIR,
        &["output_dir"],
        F::OutputDir,
        Kind::Path,
        C,
        "the default",
        "`./profiling_results`",
    ),
    setting(
        SAMPLE_INTERVAL,
        &["sample_interval"],
        F::SampleInterval,
        SAMPLE_SECONDS,
        C,
        "0.1",
        "`0.1`",
    ),
    setting(
        EXPORT_INTERVAL,
        &["export_interval", "auto_export_interval"],
        F::ExportInterval,
        EXPORT_SECONDS,
        C,
        "no periodic export",
        "unset",
    ),
    setting(
        MAX_HISTORY,
        &["max_history"],
        F::MaxHistory,
        MAX_HISTORY_COUNT,
        C,
        "10000",
        "`10000`",
    ),
    setting(
        NVML_LIBRARY,
        &[],
        F::NvmlLibrary,
        Kind::Path,
        C,
        "the default",
        "unset",
    ),
    setting(
        AMDSMI_LIBRARY,
        &[],
        F::AmdsmiLibrary,
        Kind::Path,
        C,
        "the default",
        "unset",
    ),
    setting(
        KERNELS,
        &[],
        F::Kernels,
        Kind::Bool { default: false },
        C,
        "off",
        "off",
    ),
    setting(
        CUPTI_LIBRARY,
        &[],
        F::CuptiLibrary,
        Kind::Path,
        C,
        "the default",
        "unset",
    ),
    // The Python package runs the windows; the agent checks the values and gives the
    // package the schedule (`vllm_profiler_torch_op_schedule`).
    setting(
        TORCH_OPS,
        &["enable_torch_op_profiling"],
        F::TorchOps,
        Kind::Bool { default: false },
        C,
        "off",
        "off",
    ),
    setting(
        TORCH_OP_EVERY,
        &[],
        F::TorchOpEvery,
        TORCH_OP_EVERY_COUNT,
        C,
        "200",
        "`200`",
    ),
    setting(
        TORCH_OP_STEPS,
        &[],
        F::TorchOpSteps,
        TORCH_OP_STEPS_COUNT,
        C,
        "5",
        "`5`",
    ),
    setting(
        DEVICES,
        &["devices"],
        F::Devices,
        Kind::Devices,
        C,
        "all devices",
        "all",
    ),
    setting(
        PROMETHEUS_ADDR,
        &[],
        F::PrometheusAddr,
        Kind::Address,
        C,
        "no endpoint",
        "unset",
    ),
    setting(
        PROMETHEUS_EXPIRY,
        &[],
        F::PrometheusExpiry,
        EXPIRY_SECONDS,
        C,
        "60",
        "`60`",
    ),
    setting(
        PROCESSES,
        &[],
        F::Processes,
        Kind::Globs,
        C,
        DEFAULT_PROCESSES,
        "`python*`",
    ),
    setting(
        SHARED_SAMPLER,
        &[],
        F::SharedSampler,
        Kind::Bool { default: true },
        C,
        "on",
        "on",
    ),
    setting(
        RUNTIME_DIR,
        &[],
        F::RuntimeDir,
        Kind::Path,
        C,
        "the default",
        "`$XDG_RUNTIME_DIR/vllm-profiler`, else `/tmp/vllm-profiler-<uid>`",
    ),
    setting(
        RUN_ID,
        &[],
        F::RunId,
        Kind::Name,
        ReadBy::Runtime,
        "a new run id",
        "made at start",
    ),
];

/// The setting a JSON key names.
pub fn by_json_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.json.contains(&key))
}

/// Every JSON key, in table order.
pub fn known_json_keys() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().flat_map(|s| s.json.iter().copied())
}

/// `[min, max]` as the messages write a range.
pub fn range_text(min: impl std::fmt::Display, max: impl std::fmt::Display) -> String {
    format!("[{min}, {max}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_unique() {
        let mut envs: Vec<_> = SETTINGS.iter().map(|s| s.env).collect();
        let mut keys: Vec<_> = known_json_keys().collect();
        let (n_envs, n_keys) = (envs.len(), keys.len());
        envs.sort_unstable();
        envs.dedup();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!((envs.len(), keys.len()), (n_envs, n_keys));
    }

    #[test]
    fn json_keys_belong_to_settings_the_config_reads_as_json() {
        for s in SETTINGS.iter().filter(|s| !s.json.is_empty()) {
            assert_eq!(s.read_by, ReadBy::Config, "{}", s.env);
            assert!(
                !matches!(s.kind, Kind::Address | Kind::Globs | Kind::Name),
                "{}",
                s.env
            );
        }
    }

    #[test]
    fn fallbacks_are_the_defaults() {
        let defaults = vllm_profiler_core::Settings::default();
        for s in SETTINGS {
            match s.kind {
                Kind::Bool { default } => {
                    assert_eq!(s.fallback, if default { "on" } else { "off" }, "{}", s.env)
                }
                Kind::Count { .. } => {
                    let default = match s.field {
                        Field::TorchOpEvery => DEFAULT_TORCH_OP_EVERY.to_string(),
                        Field::TorchOpSteps => DEFAULT_TORCH_OP_STEPS.to_string(),
                        _ => defaults.max_history.to_string(),
                    };
                    assert_eq!(s.fallback, default, "{}", s.env)
                }
                _ => {}
            }
        }
        let sample = SETTINGS.iter().find(|s| s.env == SAMPLE_INTERVAL).unwrap();
        assert_eq!(
            sample.fallback,
            defaults.sample_interval.as_secs_f64().to_string()
        );
    }
}
