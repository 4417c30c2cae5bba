//! Turning one setting's raw value into a typed one, by its kind in the table: leniently for
//! the environment (a bad value is a warning and no value) and strictly for the JSON
//! configuration (a bad value is an error).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;
use vllm_profiler_core::{ProfilerError, Result};

use super::table::{range_text, Kind, Setting};

/// The longest path the kernel takes (`PATH_MAX` less the NUL): a longer one can never work.
pub(super) const PATH_MAX_BYTES: usize = 4095;
/// How much of a bad value a warning shows, in characters.
const SHOWN_CHARS: usize = 64;

/// A setting's value, typed.
#[derive(Debug)]
pub enum Value {
    Bool(bool),
    Path(PathBuf),
    /// `None`: off (JSON null).
    Seconds(Option<Duration>),
    Count(u64),
    /// `None`: every device.
    Devices(Option<Vec<u32>>),
    Address(String),
    Globs(Vec<glob::Pattern>),
    Name(String),
}

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

/// Whether `text` is a [`Kind::Name`]: what the reports' `run_id` may be.
pub fn is_name(text: &str) -> bool {
    vllm_profiler_format::is_run_id(text)
}

/// `Some(true)` for 1/true/yes/on, `Some(false)` for 0/false/no/off (any case), else `None`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The environment value of `setting`, or `None` when unset or malformed; a malformed one
/// adds one warning naming the variable, the value and what is used instead.
pub fn env_value(setting: &Setting, raw: &OsStr, warnings: &mut Vec<String>) -> Option<Value> {
    let var = setting.env;
    let mut warn = |expected: &str| {
        warnings.push(format!(
            "{var}={} is not {expected}; using {}",
            shown(raw),
            setting.fallback
        ));
        None
    };
    if let Kind::Path = setting.kind {
        if raw.is_empty() {
            warnings.push(format!(
                "{var} is set but empty; using {}",
                setting.fallback
            ));
            return None;
        }
        return match unusable_path(raw.as_encoded_bytes()) {
            Some(expected) => warn(&expected),
            None => Some(Value::Path(PathBuf::from(raw))),
        };
    }
    let text = raw.to_str();
    match setting.kind {
        Kind::Bool { .. } => match text.and_then(parse_bool) {
            Some(v) => Some(Value::Bool(v)),
            None => warn("a boolean (1/true/yes/on or 0/false/no/off)"),
        },
        Kind::Seconds { min, max, .. } => {
            match text.map(str::trim).and_then(|t| t.parse::<f64>().ok()) {
                Some(v) if v.is_finite() && v >= min && v <= max => {
                    Some(Value::Seconds(Some(Duration::from_secs_f64(v))))
                }
                _ => warn(&format!("a number of seconds in {}", range_text(min, max))),
            }
        }
        Kind::Count { min, max } => match text.map(str::trim).and_then(|t| t.parse::<u64>().ok()) {
            Some(n) if (min..=max).contains(&n) => Some(Value::Count(n)),
            _ => warn(&format!("an integer in {}", range_text(min, max))),
        },
        Kind::Devices => match text.map(parse_devices) {
            Some(Ok(devices)) => Some(Value::Devices(devices)),
            _ => warn("a comma-separated list of GPU indices"),
        },
        Kind::Address => match text.and_then(parse_addr) {
            Some(addr) => Some(Value::Address(addr)),
            None => warn("a host:port address"),
        },
        Kind::Globs => match text.map(parse_globs) {
            Some(Ok(patterns)) => Some(Value::Globs(patterns)),
            _ => warn("a comma-separated list of file-name globs"),
        },
        Kind::Name => match text.filter(|t| is_name(t)) {
            Some(name) => Some(Value::Name(name.to_owned())),
            None => warn("1 to 64 letters, digits, '.', '_', '-' or ':'"),
        },
        Kind::Path => unreachable!("paths are read above"),
    }
}

/// The value of `key` (one of `setting`'s JSON keys) in the JSON configuration.
pub fn json_value(setting: &Setting, key: &str, value: &Json) -> Result<Value> {
    let invalid = |msg: String| Err(ProfilerError::InvalidConfig(msg));
    match setting.kind {
        Kind::Bool { .. } => match value.as_bool() {
            Some(v) => Ok(Value::Bool(v)),
            None => invalid(format!("{key} must be true or false")),
        },
        Kind::Path => match value {
            Json::String(dir) if !dir.is_empty() => match unusable_path(dir.as_bytes()) {
                Some(expected) => {
                    let got = shown(OsStr::new(dir));
                    invalid(format!("{key} {got} is not {expected}"))
                }
                None => Ok(Value::Path(PathBuf::from(dir))),
            },
            _ => invalid(format!("{key} must be a non-empty string")),
        },
        Kind::Seconds { nullable: true, .. } if value.is_null() => Ok(Value::Seconds(None)),
        Kind::Seconds { min, max, .. } => match value.as_f64() {
            Some(v) if v >= min && v <= max => Ok(Value::Seconds(Some(Duration::from_secs_f64(v)))),
            _ => invalid(format!(
                "{key} must be a number of seconds in {}, got {value}",
                range_text(min, max)
            )),
        },
        Kind::Count { min, max } => match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Value::Count(n)),
            _ => invalid(format!(
                "{key} must be an integer in {}, got {value}",
                range_text(min, max)
            )),
        },
        Kind::Devices => json_devices(key, value).map(Value::Devices),
        // No setting of these kinds has a JSON key (the table's tests check it).
        Kind::Address | Kind::Globs | Kind::Name => invalid(format!("{key} cannot be set in JSON")),
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

fn json_devices(key: &str, value: &Json) -> Result<Option<Vec<u32>>> {
    match value {
        Json::Null => Ok(None),
        Json::Array(items) if items.is_empty() => Err(ProfilerError::InvalidConfig(format!(
            "{key} must list at least one GPU index (null: every device)"
        ))),
        Json::Array(items) => items
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
