//! AMD GPUs through amd-smi (`libamd_smi.so`), loaded with `libloading`. This is the one
//! hand-written native loader; its unsafe calls are all in `sys`, the rest is safe code.
//!
//! Struct layouts changed between amd-smi versions, so nothing but `amdsmi_engine_usage_t`
//! (the same everywhere) is read before `amdsmi_get_lib_version` says which layout applies:
//!
//! | lib version | `amdsmi_version_t` | `amdsmi_power_info_t` |
//! |---|---|---|
//! | 23.x, 24.x, 25.1 (ROCm 6.0–6.3.3) | `year, major, minor, release, build*` | `u32 current_socket_power, average_socket_power, gfx/soc/mem_voltage, power_limit, reserved[11]` |
//! | 25.2+ (ROCm 6.4; year and major both 25) | same | `u64 socket_power; u32 current_socket_power, average_socket_power, gfx/soc/mem_voltage, power_limit, reserved[2]` |
//! | 26.x (ROCm 7) | `major, minor, release, build*` | `u64 socket_power; u32 current, average; u64 gfx/soc/mem_voltage; u32 power_limit; u64 reserved[18]` |
//!
//! Both version layouts put `build` at offset 16 in a 24-byte struct, so one buffer serves
//! both; the first word tells them apart (a two-digit year ≤ 25, or a major ≥ 26). A version
//! newer than this table is sampled without power, with one warning. Every struct is read
//! from a zeroed buffer far larger than any known layout, at fixed offsets.
//! (Sources: amdsmi.h of ROCm/amdsmi rocm-6.0.0 to rocm-6.2.0 and ROCm/rocm-systems, and the
//! ctypes wrappers generated from the headers in the `amdsmi` 6.1–7.0 Python packages.)

use std::ffi::OsString;
use std::path::Path;

use sys::{Api, Buffer, Handle, Status, STATUS_SUCCESS};
use vllm_profiler_format::{mib, GpuDevice, GpuSample};

use crate::backend::DeviceReading;
use crate::health::{Failure, Health, Metric};
use crate::options::Options;
use crate::vendor::{Libraries, Reader, VendorBackend};

mod sys;

pub const AMDSMI_DETECTOR: &str = "AMDSMIDetector";

const DEFAULT_LIBRARY: &str = "libamd_smi.so";

const STATUS_NOT_SUPPORTED: u32 = 2;
const STATUS_NOT_YET_IMPLEMENTED: u32 = 3;
const MEM_TYPE_VRAM: u32 = 0;
const TEMPERATURE_TYPE_EDGE: u32 = 0;
/// Also `AMDSMI_TEMPERATURE_TYPE_JUNCTION`.
const TEMPERATURE_TYPE_HOTSPOT: u32 = 1;
const TEMP_CURRENT: u32 = 0;

/// Where `amdsmi_power_info_t` keeps the socket power, by version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PowerLayout {
    /// 23.x and 24.x: u32 current_socket_power at 0, average_socket_power at 4.
    V24,
    /// 25.x and 26.x: u64 socket_power at 0, u32 current at 8, average at 12.
    V25,
    /// Newer than this build knows: power is not read.
    Unknown,
}

/// The library's version, decoded from `amdsmi_version_t` of either layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LibVersion {
    major: u32,
    minor: u32,
    release: u32,
    power: PowerLayout,
}

impl LibVersion {
    /// `words` are the struct's first four u32: `major, minor, release, padding` since 26.x;
    /// before, `year, major, minor, release`, where the year-style number is the release
    /// major (ROCm 6.2 is 24.6.2) until 25.2 made `major` year-style too (ROCm 6.4: 25, 25,
    /// 3). ROCm 6.3.3 reports year 25, major 1, with the 24.x structs.
    fn decode(words: [u32; 4]) -> LibVersion {
        let (major, minor, release) = match words {
            [w0, w1, w2, _] if w0 >= 26 => (w0, w1, w2),
            [25, w1, w2, w3] if w1 >= 25 => (w1, w2, w3),
            [w0, w1, w2, _] => (w0, w1, w2),
        };
        let power = match (major, words[0], words[1]) {
            (27.., _, _) => PowerLayout::Unknown,
            (26, _, _) => PowerLayout::V25,
            (25, 25, 25..) => PowerLayout::V25,
            _ => PowerLayout::V24,
        };
        LibVersion {
            major,
            minor,
            release,
            power,
        }
    }

    fn power_layout(self) -> PowerLayout {
        self.power
    }
}

/// A loaded amd-smi: its functions and its version.
struct AmdSmi {
    api: Api,
    version: LibVersion,
}

/// Every amd-smi initialised in this process (see `vendor::Libraries`).
static INSTANCES: Libraries<AmdSmi> = Libraries::new();

impl AmdSmi {
    fn instance(path: Option<&Path>) -> Result<&'static AmdSmi, String> {
        let name = path.map_or_else(|| OsString::from(DEFAULT_LIBRARY), |p| p.into());
        INSTANCES.get_or_load(&name, || {
            let (api, words) =
                Api::load(&name).map_err(|e| format!("{}: {e}", name.to_string_lossy()))?;
            Ok(AmdSmi {
                api,
                version: LibVersion::decode(words),
            })
        })
    }

    fn describe(&self, status: Status) -> String {
        match self.api.status_text(status) {
            Some(text) => format!("{text} (status {status})"),
            None => format!("status {status}"),
        }
    }

    /// The status of a call as a `Failure`.
    fn check(&self, status: u32) -> Result<(), Failure> {
        match status {
            STATUS_SUCCESS => Ok(()),
            STATUS_NOT_SUPPORTED | STATUS_NOT_YET_IMPLEMENTED => Err(Failure::NotSupported),
            other => Err(Failure::Failed(self.describe(other))),
        }
    }

    /// Every GPU processor handle, socket by socket: seed 001's enumeration order.
    fn processor_handles(&self) -> Result<Vec<Handle>, String> {
        let sockets = self
            .api
            .socket_handles()
            .map_err(|status| format!("amdsmi_get_socket_handles: {}", self.describe(status)))?;
        let mut handles = Vec::new();
        for socket in sockets {
            let found = self.api.processor_handles(socket).map_err(|status| {
                format!("amdsmi_get_processor_handles: {}", self.describe(status))
            })?;
            handles.extend(found);
        }
        Ok(handles)
    }

    fn missing(name: &str) -> Failure {
        Failure::MissingSymbol(format!("no {name} in the amd-smi library"))
    }

    /// (gfx activity %, UMC activity %).
    fn activity(&self, handle: Handle) -> Result<(Option<f64>, Option<f64>), Failure> {
        let mut buffer = Buffer::new();
        let status = self
            .api
            .activity(handle, &mut buffer)
            .ok_or_else(|| Self::missing("amdsmi_get_gpu_activity"))?;
        self.check(status)?;
        Ok((percent(buffer.u32_at(0)), percent(buffer.u32_at(4))))
    }

    fn vram(&self, handle: Handle, total: bool) -> Result<u64, Failure> {
        let name = if total {
            "amdsmi_get_gpu_memory_total"
        } else {
            "amdsmi_get_gpu_memory_usage"
        };
        let mut bytes = 0u64;
        let status = self
            .api
            .memory(handle, total, MEM_TYPE_VRAM, &mut bytes)
            .ok_or_else(|| Self::missing(name))?;
        self.check(status)?;
        Ok(bytes)
    }

    /// Edge temperature, °C; the hotspot (junction) sensor where the device has no edge
    /// sensor (MI300-class devices), as amd-smi's own tools do.
    fn temperature(&self, handle: Handle) -> Result<f64, Failure> {
        match self.sensor_temperature(handle, TEMPERATURE_TYPE_EDGE) {
            Err(Failure::NotSupported) => self.sensor_temperature(handle, TEMPERATURE_TYPE_HOTSPOT),
            other => other,
        }
    }

    fn sensor_temperature(&self, handle: Handle, sensor: u32) -> Result<f64, Failure> {
        let mut celsius = 0i64;
        let status = self
            .api
            .temperature(handle, sensor, TEMP_CURRENT, &mut celsius)
            .ok_or_else(|| Self::missing("amdsmi_get_temp_metric"))?;
        self.check(status)?;
        Ok(celsius as f64)
    }

    /// Socket power, W.
    fn socket_power(&self, handle: Handle) -> Result<Option<f64>, Failure> {
        let layout = self.version.power_layout();
        if layout == PowerLayout::Unknown {
            return Err(Failure::MissingSymbol(format!(
                "amd-smi {}.{}.{} is newer than the power struct layouts this build knows",
                self.version.major, self.version.minor, self.version.release
            )));
        }
        let mut buffer = Buffer::new();
        // Unwritten fields read as the all-ones sentinel.
        buffer.fill(0xFF);
        let status = self
            .api
            .power_info(handle, &mut buffer)
            .ok_or_else(|| Self::missing("amdsmi_get_power_info"))?;
        let watts = match layout {
            PowerLayout::V24 => [buffer.u32_at(0), buffer.u32_at(4)]
                .into_iter()
                .find(|&w| valid_u32(w))
                .map(f64::from),
            _ => Some(buffer.u64_at(0))
                .filter(|&w| valid_u64(w))
                .map(|w| w as f64)
                .or_else(|| {
                    [buffer.u32_at(8), buffer.u32_at(12)]
                        .into_iter()
                        .find(|&w| valid_u32(w))
                        .map(f64::from)
                }),
        };
        // amd-smi 6.x returns the power-cap query's status even when it filled the socket
        // power: a valid reading wins over the status.
        match watts {
            Some(watts) => Ok(Some(watts)),
            None => self.check(status).map(|()| None),
        }
    }

    fn market_name(&self, handle: Handle) -> Option<String> {
        let mut buffer = Buffer::new();
        // amdsmi_asic_info_t starts with char market_name[256] in every version.
        let status = self.api.asic_info(handle, &mut buffer)?;
        (status == STATUS_SUCCESS)
            .then(|| buffer.text_at(0, 256))
            .flatten()
    }

    fn device_uuid(&self, handle: Handle) -> Option<String> {
        let mut buffer = Buffer::new();
        let status = self.api.device_uuid(handle, &mut buffer)?;
        (status == STATUS_SUCCESS)
            .then(|| buffer.text_at(0, 256))
            .flatten()
    }
}

/// amd-smi marks values it cannot read with all-ones sentinels (0xFFFF, UINT32_MAX).
fn valid_u32(value: u32) -> bool {
    value != u32::MAX && value != u32::from(u16::MAX)
}

fn valid_u64(value: u64) -> bool {
    value != u64::MAX && value != u64::from(u32::MAX) && value != u64::from(u16::MAX)
}

fn percent(value: u32) -> Option<f64> {
    (value <= 100).then_some(f64::from(value))
}

struct OpenDevice {
    handle: Handle,
    index: u32,
}

/// Samples every selected AMD GPU.
pub type AmdSmiBackend = VendorBackend<AmdSmiDevices>;

/// The open AMD GPUs.
pub struct AmdSmiDevices {
    amd: &'static AmdSmi,
    devices: Vec<OpenDevice>,
}

impl AmdSmiBackend {
    /// Loads amd-smi and opens the selected devices. `Err` says why amd-smi cannot answer.
    pub fn open(options: &Options) -> Result<AmdSmiBackend, String> {
        let amd = AmdSmi::instance(options.amdsmi_library.as_deref())?;
        let handles = amd.processor_handles()?;
        let found = handles.len() as u32;
        let mut health = Health::new("amd-smi");
        let selected = options.selected(found, "amd-smi", &mut health);
        let mut devices = Vec::new();
        let mut described = Vec::new();
        for index in selected {
            let handle = handles[index as usize];
            described.push(GpuDevice {
                index,
                name: amd.market_name(handle),
                uuid: amd.device_uuid(handle),
                gpu_type: "amd".to_owned(),
                memory_total_mb: amd.vram(handle, true).ok().map(mib),
            });
            devices.push(OpenDevice { handle, index });
        }
        let reader = AmdSmiDevices { amd, devices };
        Ok(VendorBackend::new(
            AMDSMI_DETECTOR,
            found,
            described,
            health,
            reader,
        ))
    }
}

impl Reader for AmdSmiDevices {
    fn read(&mut self, position: usize, health: &mut Health, timestamp: f64) -> DeviceReading {
        let (amd, handle, index) = (
            self.amd,
            self.devices[position].handle,
            self.devices[position].index,
        );
        // Activity first: it opens the sample (the fake amd-smi advances its script on it).
        let activity = health.read(position, index, Metric::Utilization, || {
            amd.activity(handle)
        });
        let memory = health.read(position, index, Metric::Memory, || {
            Ok((amd.vram(handle, false)?, amd.vram(handle, true)?))
        });
        let temperature = health.read(position, index, Metric::Temperature, || {
            amd.temperature(handle)
        });
        let power = health
            .read(position, index, Metric::Power, || amd.socket_power(handle))
            .flatten();
        let sample = GpuSample {
            timestamp,
            device_id: index,
            gpu_utilization: activity.and_then(|a| a.0),
            memory_controller_utilization: activity.and_then(|a| a.1),
            memory_utilization: memory
                .filter(|&(_, total)| total > 0)
                .map(|(used, total)| used as f64 / total as f64 * 100.0),
            memory_used_mb: memory.map(|(used, _)| mib(used)),
            memory_total_mb: memory.map(|(_, total)| mib(total)),
            memory_free_mb: memory.map(|(used, total)| mib(total.saturating_sub(used))),
            temperature,
            power_draw: power,
            // The power cap's unit differs between versions; clocks and per-process memory
            // need structs that changed too. Not read rather than read wrong.
            power_limit: None,
            sm_clock_mhz: None,
            memory_clock_mhz: None,
            process_memory_used_mb: None,
            // NVIDIA's GPM; amd-smi's counterparts are not read yet.
            ..GpuSample::default()
        };
        DeviceReading {
            sample,
            processes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_version_layouts_decode_to_the_release_numbering() {
        // ROCm 6.2: year 24, major 6, minor 2 -> 24.6.2 (the year is the release major).
        let old = LibVersion::decode([24, 6, 2, 0]);
        assert_eq!((old.major, old.minor, old.release), (24, 6, 2));
        assert_eq!(old.power_layout(), PowerLayout::V24);
        // ROCm 6.3.3: year 25, major 1, still the 24.x power struct.
        let v6_3_3 = LibVersion::decode([25, 1, 0, 0]);
        assert_eq!((v6_3_3.major, v6_3_3.minor), (25, 1));
        assert_eq!(v6_3_3.power_layout(), PowerLayout::V24);
        // ROCm 6.4: year 25, major 25, minor 3 -> 25.3.0 with the u64 socket_power first.
        let v6_4 = LibVersion::decode([25, 25, 3, 0]);
        assert_eq!((v6_4.major, v6_4.minor, v6_4.release), (25, 3, 0));
        assert_eq!(v6_4.power_layout(), PowerLayout::V25);
        // ROCm 7: major 26, minor 5, release 0, then padding.
        let new = LibVersion::decode([26, 5, 0, 0xdead]);
        assert_eq!((new.major, new.minor, new.release), (26, 5, 0));
        assert_eq!(new.power_layout(), PowerLayout::V25);
        assert_eq!(
            LibVersion::decode([27, 0, 0, 0]).power_layout(),
            PowerLayout::Unknown
        );
    }

    #[test]
    fn sentinels_mean_unknown() {
        assert!(!valid_u32(0xFFFF));
        assert!(!valid_u32(u32::MAX));
        assert!(valid_u32(350));
        assert!(!valid_u64(u64::MAX));
        assert!(valid_u64(0));
        assert_eq!(percent(101), None);
        assert_eq!(percent(42), Some(42.0));
    }
}
