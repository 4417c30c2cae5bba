//! The script of the fake GPU libraries (`crates/fake-nvml`, `crates/fake-amdsmi`), read from
//! the JSON file an environment variable names, and the state that plays it back.
//!
//! ```json
//! {
//!   "driver_version": "550.54.15",
//!   "init_error": 0,
//!   "omit_symbols": ["nvmlDeviceGetPowerUsage"],
//!   "advance_on": "nvmlDeviceGetUtilizationRates",
//!   "call_log": "/tmp/calls.log",
//!   "devices": [{
//!     "name": "Fake GPU 0", "uuid": "GPU-00000000-0000-0000-0000-000000000000",
//!     "memory_total_mb": 81920,
//!     "frames": [{
//!       "gpu_utilization": 10, "memory_controller_utilization": 4, "memory_used_mb": 1024,
//!       "temperature": 40, "power_draw_mw": 100250, "power_limit_mw": 700000,
//!       "sm_clock_mhz": 1980, "memory_clock_mhz": 2619,
//!       "processes": [{"pid": "self", "used_memory_mb": 512}],
//!       "gpm": {"SM_UTIL": 35.5, "DRAM_BW_UTIL": 80},
//!       "errors": {"nvmlDeviceGetTemperature": 999},
//!       "delay_ms": {"nvmlDeviceGetUtilizationRates": 2000}
//!     }]
//!   }]
//! }
//! ```
//!
//! Each device plays its frames in order: the n-th call of the `advance_on` function for that
//! device uses frame n (the last frame repeats), and every other function uses the frame of the
//! latest such call (frame 0 before any). A sample that starts with `advance_on` therefore sees
//! one frame in all its fields. A frame's `errors` make the named functions return that code
//! for the device while the frame is current; `delay_ms` makes them sleep first.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

pub mod symbols;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default = "default_driver_version")]
    pub driver_version: String,
    /// Returned by the init functions instead of success.
    #[serde(default)]
    pub init_error: u32,
    /// Exported functions hidden from `dlsym` when the library loads.
    #[serde(default)]
    pub omit_symbols: Vec<String>,
    /// The function whose calls advance a device to its next frame; the library's default
    /// when unset.
    #[serde(default)]
    pub advance_on: Option<String>,
    /// A file that gets one line per call: `<pid> <function> <device>`.
    #[serde(default)]
    pub call_log: Option<String>,
    /// For amd-smi: the library version it reports, `[major, minor, release]`.
    #[serde(default)]
    pub lib_version: Option<[u32; 3]>,
    pub devices: Vec<DeviceScript>,
}

fn default_driver_version() -> String {
    "550.54.15".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceScript {
    pub name: String,
    pub uuid: String,
    pub memory_total_mb: u64,
    pub frames: Vec<Frame>,
}

/// One device's figures for a stretch of time. A missing figure makes its function return
/// "not supported".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub gpu_utilization: Option<u32>,
    pub memory_controller_utilization: Option<u32>,
    pub memory_used_mb: Option<u64>,
    pub temperature: Option<u32>,
    /// amd-smi's hotspot (junction) sensor; MI300-class devices have no edge sensor.
    pub hotspot_temperature: Option<u32>,
    pub power_draw_mw: Option<u32>,
    pub power_limit_mw: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    #[serde(default)]
    pub processes: Vec<Process>,
    /// GPM metrics by NVML's name without its prefix (`SM_UTIL`, `SM_OCCUPANCY`,
    /// `ANY_TENSOR_UTIL`, `DRAM_BW_UTIL`): what `nvmlGpmMetricsGet` gives for an interval that
    /// ends in this frame. A device supports GPM when any of its frames has one.
    #[serde(default)]
    pub gpm: BTreeMap<String, f64>,
    #[serde(default)]
    pub errors: BTreeMap<String, u32>,
    #[serde(default)]
    pub delay_ms: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub pid: Pid,
    pub used_memory_mb: u64,
}

/// A process id, or `"self"` for the process that calls the library.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Pid {
    Number(u32),
    Named(String),
}

impl Pid {
    pub fn resolve(&self) -> u32 {
        match self {
            Pid::Number(pid) => *pid,
            Pid::Named(_) => std::process::id(),
        }
    }
}

/// The MiB of the `_mb` figures the script gives. A literal, not the agent's constant: the
/// fakes check the agent's conversion, so they must not share it.
pub const MIB: u64 = 1 << 20;

/// A script being played.
pub struct Player {
    pub script: Script,
    advance_on: String,
    /// Per device: calls of `advance_on` so far.
    advances: Vec<AtomicU64>,
}

impl Player {
    /// Reads the script named by `env_var`. `Err` says what is wrong, for the library to print.
    pub fn from_env(env_var: &str, default_advance_on: &str) -> Result<Player, String> {
        let path = std::env::var_os(env_var).ok_or_else(|| format!("{env_var} is not set"))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.to_string_lossy()))?;
        let script: Script = serde_json::from_str(&text)
            .map_err(|err| format!("bad script {}: {err}", path.to_string_lossy()))?;
        if let Some(device) = script.devices.iter().find(|d| d.frames.is_empty()) {
            return Err(format!("device {} has no frames", device.name));
        }
        Ok(Player {
            advance_on: script
                .advance_on
                .clone()
                .unwrap_or_else(|| default_advance_on.to_owned()),
            advances: script.devices.iter().map(|_| AtomicU64::new(0)).collect(),
            script,
        })
    }

    pub fn device_count(&self) -> usize {
        self.script.devices.len()
    }

    /// Enters `function` for device `index`: logs the call, advances the frame if this is the
    /// advancing function, sleeps as scripted. Returns the device and its current frame, or
    /// the scripted error code.
    pub fn enter(&self, function: &str, index: usize) -> Result<(&DeviceScript, &Frame), u32> {
        self.log(function, Some(index));
        let device = self.script.devices.get(index).ok_or(u32::MAX)?;
        let frame_number = if function == self.advance_on {
            self.advances[index].fetch_add(1, Ordering::SeqCst)
        } else {
            self.advances[index]
                .load(Ordering::SeqCst)
                .saturating_sub(1)
        };
        let last = device.frames.len() - 1;
        let frame = &device.frames[(frame_number as usize).min(last)];
        if let Some(ms) = frame.delay_ms.get(function) {
            std::thread::sleep(Duration::from_millis(*ms));
        }
        match frame.errors.get(function) {
            Some(&code) => Err(code),
            None => Ok((device, frame)),
        }
    }

    /// Appends `<pid> <function> <device or ->` to the call log, if there is one.
    pub fn log(&self, function: &str, device: Option<usize>) {
        let Some(path) = &self.script.call_log else {
            return;
        };
        let device = device.map_or("-".to_owned(), |d| d.to_string());
        let line = format!("{} {function} {device}\n", std::process::id());
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

/// Copies `text` into a C buffer of `len` bytes with its NUL; false when it does not fit.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn write_c_string(text: &str, buf: *mut libc::c_char, len: usize) -> bool {
    if buf.is_null() || text.len() + 1 > len {
        return false;
    }
    // SAFETY: the caller guarantees `len` writable bytes; we write text.len() + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    true
}
