//! A fake amd-smi for tests: exports the amd-smi C functions vllm-profiler uses, with values
//! played from the JSON script named by `FAKE_AMDSMI_SCRIPT` (see `fake-gpu-script`). Its
//! `lib_version` picks which version's struct layouts it speaks (`[major, minor, release]` from
//! 26.x, the raw `[year, major, minor]` words before: `[24, 6, 2]` is ROCm 6.2, `[25, 1, 0]`
//! ROCm 6.3.3, `[25, 25, 3]` ROCm 6.4); the structs below are copied
//! from amdsmi.h of each version, independently of the backend's offset tables, so that a
//! layout mistake on either side fails the tests.
#![allow(unsafe_code, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use fake_gpu_script::{write_c_string, DeviceScript, Frame, Player, MIB};

type Status = u32;
type Handle = *mut c_void;

const SUCCESS: Status = 0;
const INVAL: Status = 1;
const NOT_SUPPORTED: Status = 2;
const NOT_INIT: Status = 32;
const UNKNOWN_ERROR: Status = 0xFFFF_FFFF;

const SCRIPT_ENV: &str = "FAKE_AMDSMI_SCRIPT";
const ADVANCE_ON: &str = "amdsmi_get_gpu_activity";

static PLAYER: OnceLock<Result<Player, String>> = OnceLock::new();
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);
/// One socket handle; processor handles are addresses in `PROCESSORS`.
static SOCKET: [u8; 1] = [0];
static PROCESSORS: [u8; 64] = [0; 64];

fn player() -> Option<&'static Player> {
    PLAYER
        .get_or_init(|| Player::from_env(SCRIPT_ENV, ADVANCE_ON))
        .as_ref()
        .ok()
}

#[ctor::ctor(unsafe)]
fn load_script() {
    match PLAYER.get_or_init(|| Player::from_env(SCRIPT_ENV, ADVANCE_ON)) {
        Ok(player) => {
            let anchor = amdsmi_init as *const c_void;
            if let Err(err) = fake_gpu_script::symbols::hide(anchor, &player.script.omit_symbols) {
                eprintln!("fake amd-smi: {err}");
            }
        }
        Err(err) => eprintln!("fake amd-smi: {err}"),
    }
}

/// The scripted library version; 26.0.0 when unset.
fn version() -> [u32; 3] {
    player()
        .and_then(|p| p.script.lib_version)
        .unwrap_or([26, 0, 0])
}

fn ready() -> Result<&'static Player, Status> {
    match player() {
        Some(player) if INIT_COUNT.load(Ordering::SeqCst) > 0 => Ok(player),
        _ => Err(NOT_INIT),
    }
}

fn with_frame(
    function: &str,
    handle: Handle,
    body: impl FnOnce(&DeviceScript, &Frame) -> Status,
) -> Status {
    let player = match ready() {
        Ok(player) => player,
        Err(status) => return status,
    };
    let index = (handle as usize).wrapping_sub(PROCESSORS.as_ptr() as usize);
    if index >= player.device_count() {
        return INVAL;
    }
    match player.enter(function, index) {
        Ok((device, frame)) => body(device, frame),
        Err(code) => code,
    }
}

#[no_mangle]
pub extern "C" fn amdsmi_init(_flags: u64) -> Status {
    let Some(player) = player() else {
        return UNKNOWN_ERROR;
    };
    player.log("amdsmi_init", None);
    if player.script.init_error != 0 {
        return player.script.init_error;
    }
    INIT_COUNT.fetch_add(1, Ordering::SeqCst);
    SUCCESS
}

#[no_mangle]
pub extern "C" fn amdsmi_shut_down() -> Status {
    match INIT_COUNT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => SUCCESS,
        Err(_) => NOT_INIT,
    }
}

/// `amdsmi_version_t` up to 25.x.
#[repr(C)]
pub struct VersionWithYear {
    year: u32,
    major: u32,
    minor: u32,
    release: u32,
    build: *const c_char,
}

/// `amdsmi_version_t` since 26.x.
#[repr(C)]
pub struct Version {
    major: u32,
    minor: u32,
    release: u32,
    build: *const c_char,
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_lib_version(out: *mut c_void) -> Status {
    if ready().is_err() {
        return NOT_INIT;
    }
    if out.is_null() {
        return INVAL;
    }
    let [major, minor, release] = version();
    let build = c"fake".as_ptr();
    // SAFETY: the caller passes the struct of the version it was built for; the backend
    // passes a buffer larger than both.
    unsafe {
        if major >= 26 {
            *out.cast::<Version>() = Version {
                major,
                minor,
                release,
                build,
            };
        } else {
            // Before 26.x the script gives the raw `year, major, minor` words.
            *out.cast::<VersionWithYear>() = VersionWithYear {
                year: major,
                major: minor,
                minor: release,
                release: 0,
                build,
            };
        }
    }
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_socket_handles(
    count: *mut u32,
    sockets: *mut Handle,
) -> Status {
    if ready().is_err() {
        return NOT_INIT;
    }
    if count.is_null() {
        return INVAL;
    }
    // SAFETY: caller pointers; with a non-null array, *count is its room.
    unsafe {
        if !sockets.is_null() && *count >= 1 {
            *sockets = SOCKET.as_ptr() as Handle;
        }
        *count = 1;
    }
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_processor_handles(
    socket: Handle,
    count: *mut u32,
    processors: *mut Handle,
) -> Status {
    let player = match ready() {
        Ok(player) => player,
        Err(status) => return status,
    };
    if count.is_null() || !std::ptr::eq(socket.cast_const().cast::<u8>(), SOCKET.as_ptr()) {
        return INVAL;
    }
    let devices = player.device_count() as u32;
    // SAFETY: caller pointers; with a non-null array, *count is its room.
    unsafe {
        if !processors.is_null() {
            for i in 0..devices.min(*count) {
                *processors.add(i as usize) = PROCESSORS.as_ptr().add(i as usize) as Handle;
            }
        }
        *count = devices;
    }
    SUCCESS
}

/// `amdsmi_engine_usage_t` (every version).
#[repr(C)]
pub struct EngineUsage {
    gfx_activity: u32,
    umc_activity: u32,
    mm_activity: u32,
    reserved: [u32; 13],
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_activity(handle: Handle, out: *mut EngineUsage) -> Status {
    with_frame("amdsmi_get_gpu_activity", handle, |_, f| {
        match (
            out.is_null(),
            f.gpu_utilization,
            f.memory_controller_utilization,
        ) {
            (true, _, _) => INVAL,
            (false, Some(gfx), Some(umc)) => {
                // SAFETY: non-null caller struct.
                unsafe {
                    *out = EngineUsage {
                        gfx_activity: gfx,
                        umc_activity: umc,
                        mm_activity: u32::from(u16::MAX),
                        reserved: [0; 13],
                    }
                };
                SUCCESS
            }
            _ => NOT_SUPPORTED,
        }
    })
}

unsafe fn put_u64(out: *mut u64, value: Option<u64>) -> Status {
    match (out.is_null(), value) {
        (true, _) => INVAL,
        (false, None) => NOT_SUPPORTED,
        (false, Some(v)) => {
            // SAFETY: non-null caller pointer.
            unsafe { *out = v };
            SUCCESS
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_memory_total(
    handle: Handle,
    kind: u32,
    out: *mut u64,
) -> Status {
    with_frame("amdsmi_get_gpu_memory_total", handle, |d, _| {
        let vram = (kind == 0).then_some(d.memory_total_mb * MIB);
        // SAFETY: forwarded caller pointer.
        unsafe { put_u64(out, vram) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_memory_usage(
    handle: Handle,
    kind: u32,
    out: *mut u64,
) -> Status {
    with_frame("amdsmi_get_gpu_memory_usage", handle, |_, f| {
        let used = if kind == 0 {
            f.memory_used_mb.map(|mb| mb * MIB)
        } else {
            None
        };
        // SAFETY: forwarded caller pointer.
        unsafe { put_u64(out, used) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_temp_metric(
    handle: Handle,
    sensor: u32,
    metric: u32,
    out: *mut i64,
) -> Status {
    with_frame("amdsmi_get_temp_metric", handle, |_, f| {
        // Edge (0) and hotspot (1), current (0) only.
        let celsius = match sensor {
            0 => f.temperature,
            1 => f.hotspot_temperature,
            _ => None,
        };
        match (out.is_null(), metric, celsius) {
            (true, ..) => INVAL,
            (false, 0, Some(celsius)) => {
                // SAFETY: non-null caller pointer.
                unsafe { *out = i64::from(celsius) };
                SUCCESS
            }
            _ => NOT_SUPPORTED,
        }
    })
}

/// `amdsmi_power_info_t` of 23.x and 24.x.
#[repr(C)]
pub struct PowerInfoV24 {
    current_socket_power: u32,
    average_socket_power: u32,
    gfx_voltage: u32,
    soc_voltage: u32,
    mem_voltage: u32,
    power_limit: u32,
    reserved: [u32; 11],
}

/// `amdsmi_power_info_t` of 25.x.
#[repr(C)]
pub struct PowerInfoV25 {
    socket_power: u64,
    current_socket_power: u32,
    average_socket_power: u32,
    gfx_voltage: u32,
    soc_voltage: u32,
    mem_voltage: u32,
    power_limit: u32,
    reserved: [u32; 2],
}

/// `amdsmi_power_info_t` of 26.x.
#[repr(C)]
pub struct PowerInfoV26 {
    socket_power: u64,
    current_socket_power: u32,
    average_socket_power: u32,
    gfx_voltage: u64,
    soc_voltage: u64,
    mem_voltage: u64,
    power_limit: u32,
    reserved: [u64; 18],
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_power_info(handle: Handle, out: *mut c_void) -> Status {
    with_frame("amdsmi_get_power_info", handle, |_, f| {
        if out.is_null() {
            return INVAL;
        }
        let Some(mw) = f.power_draw_mw else {
            return NOT_SUPPORTED;
        };
        // amd-smi reports whole watts.
        let watts = mw / 1000;
        let limit = f.power_limit_mw.map_or(0xFFFF, |mw| mw / 1000);
        // SAFETY: the caller passes the struct of the version it was built for.
        unsafe {
            match version() {
                // 24.x, and ROCm 6.3.3 (year 25, major 1): the all-u32 struct.
                [0..=24, ..] | [25, 0..=24, _] => {
                    *out.cast::<PowerInfoV24>() = PowerInfoV24 {
                        // MI300-style: no instantaneous reading, the average is valid.
                        current_socket_power: 0xFFFF,
                        average_socket_power: watts,
                        gfx_voltage: 0xFFFF,
                        soc_voltage: 0xFFFF,
                        mem_voltage: 0xFFFF,
                        power_limit: limit,
                        reserved: [0; 11],
                    }
                }
                [25, ..] => {
                    *out.cast::<PowerInfoV25>() = PowerInfoV25 {
                        socket_power: u64::from(watts),
                        current_socket_power: 0xFFFF,
                        average_socket_power: watts,
                        gfx_voltage: 0xFFFF,
                        soc_voltage: 0xFFFF,
                        mem_voltage: 0xFFFF,
                        power_limit: limit,
                        reserved: [0; 2],
                    }
                }
                _ => {
                    *out.cast::<PowerInfoV26>() = PowerInfoV26 {
                        socket_power: u64::from(watts),
                        current_socket_power: watts,
                        average_socket_power: watts,
                        gfx_voltage: u64::MAX,
                        soc_voltage: u64::MAX,
                        mem_voltage: u64::MAX,
                        power_limit: limit,
                        reserved: [0; 18],
                    }
                }
            }
        }
        SUCCESS
    })
}

/// The start of `amdsmi_asic_info_t`: `market_name` is first in every version; the rest is
/// left zeroed (the largest version is under 1 KiB).
#[repr(C)]
pub struct AsicInfoStart {
    market_name: [u8; 256],
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_asic_info(
    handle: Handle,
    out: *mut AsicInfoStart,
) -> Status {
    with_frame("amdsmi_get_gpu_asic_info", handle, |d, _| {
        if out.is_null() {
            return INVAL;
        }
        // SAFETY: market_name is 256 bytes at the start of the caller's struct.
        let written =
            unsafe { write_c_string(&d.name, (*out).market_name.as_mut_ptr().cast(), 256) };
        if written {
            SUCCESS
        } else {
            INVAL
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_device_uuid(
    handle: Handle,
    length: *mut u32,
    out: *mut c_char,
) -> Status {
    with_frame("amdsmi_get_gpu_device_uuid", handle, |d, _| {
        if length.is_null() {
            return INVAL;
        }
        // SAFETY: the caller's buffer holds *length bytes.
        let written = unsafe { write_c_string(&d.uuid, out, *length as usize) };
        if written {
            SUCCESS
        } else {
            INVAL
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_status_code_to_string(
    status: Status,
    out: *mut *const c_char,
) -> Status {
    if out.is_null() {
        return INVAL;
    }
    let text: &'static [u8] = match status {
        SUCCESS => b"AMDSMI_STATUS_SUCCESS: Call succeeded\0",
        INVAL => b"AMDSMI_STATUS_INVAL: Invalid parameters\0",
        NOT_SUPPORTED => b"AMDSMI_STATUS_NOT_SUPPORTED: Command not supported\0",
        NOT_INIT => b"AMDSMI_STATUS_NOT_INIT: Processor not initialized\0",
        _ => b"AMDSMI_STATUS_UNKNOWN_ERROR: An unknown error occurred\0",
    };
    // SAFETY: non-null caller pointer; the string is static.
    unsafe { *out = text.as_ptr().cast() };
    SUCCESS
}
