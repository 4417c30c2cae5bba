//! A fake NVML for tests: exports the NVML C functions that vllm-profiler and pynvml use, with
//! values played from the JSON script named by `FAKE_NVML_SCRIPT` (see `fake-gpu-script`).
//! Point `VLLM_PROFILING_NVML_LIBRARY` at it, or put it on the library path as
//! `libnvidia-ml.so.1` for pynvml.
//!
//! Exports never call each other, so that hiding one (`omit_symbols`) cannot break another.
#![allow(unsafe_code, non_snake_case, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_uint, c_void};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use fake_gpu_script::{write_c_string, DeviceScript, Frame, Player, MIB};

mod gpm;

type NvmlReturn = c_uint;
type NvmlDevice = *const u8;

const SUCCESS: NvmlReturn = 0;
const ERROR_UNINITIALIZED: NvmlReturn = 1;
const ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
const ERROR_NOT_SUPPORTED: NvmlReturn = 3;
const ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
const ERROR_ARGUMENT_VERSION_MISMATCH: NvmlReturn = 25;
const ERROR_UNKNOWN: NvmlReturn = 999;

const SCRIPT_ENV: &str = "FAKE_NVML_SCRIPT";
const MEMORY_V2_VERSION: c_uint = (std::mem::size_of::<MemoryV2>() as c_uint) | (2 << 24);

static PLAYER: OnceLock<Result<Player, String>> = OnceLock::new();
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);
/// Device handles are addresses in this array, one byte per device.
static HANDLES: [u8; 64] = [0; 64];

fn player() -> Option<&'static Player> {
    PLAYER
        .get_or_init(|| Player::from_env(SCRIPT_ENV, "nvmlDeviceGetUtilizationRates"))
        .as_ref()
        .ok()
}

#[ctor::ctor(unsafe)]
fn load_script() {
    match PLAYER.get_or_init(|| Player::from_env(SCRIPT_ENV, "nvmlDeviceGetUtilizationRates")) {
        Ok(player) => {
            let anchor = nvmlInit_v2 as *const c_void;
            if let Err(err) = fake_gpu_script::symbols::hide(anchor, &player.script.omit_symbols) {
                eprintln!("fake NVML: {err}");
            }
        }
        Err(err) => eprintln!("fake NVML: {err}"),
    }
}

fn init() -> NvmlReturn {
    let Some(player) = player() else {
        return ERROR_UNKNOWN;
    };
    player.log("nvmlInit", None);
    if player.script.init_error != 0 {
        return player.script.init_error;
    }
    INIT_COUNT.fetch_add(1, Ordering::SeqCst);
    SUCCESS
}

/// The initialised player, or the error an uninitialised NVML gives.
fn ready(function: &str) -> Result<&'static Player, NvmlReturn> {
    let player = player().ok_or(ERROR_UNINITIALIZED)?;
    if INIT_COUNT.load(Ordering::SeqCst) == 0 {
        return Err(ERROR_UNINITIALIZED);
    }
    player.log(function, None);
    Ok(player)
}

fn device_index(device: NvmlDevice, player: &Player) -> Option<usize> {
    let offset = (device as usize).checked_sub(HANDLES.as_ptr() as usize)?;
    (offset < player.device_count()).then_some(offset)
}

/// Runs `body` with the device's current frame, or returns the scripted or argument error.
fn with_frame(
    function: &str,
    device: NvmlDevice,
    body: impl FnOnce(&'static DeviceScript, &'static Frame) -> NvmlReturn,
) -> NvmlReturn {
    let player = match player() {
        Some(player) if INIT_COUNT.load(Ordering::SeqCst) > 0 => player,
        _ => return ERROR_UNINITIALIZED,
    };
    let Some(index) = device_index(device, player) else {
        return ERROR_INVALID_ARGUMENT;
    };
    match player.enter(function, index) {
        Ok((script, frame)) => body(script, frame),
        Err(code) => code,
    }
}

/// Stores `value` in `out`, or says the device does not support it.
unsafe fn put(out: *mut c_uint, value: Option<u32>) -> NvmlReturn {
    match (out.is_null(), value) {
        (true, _) => ERROR_INVALID_ARGUMENT,
        (false, None) => ERROR_NOT_SUPPORTED,
        (false, Some(value)) => {
            // SAFETY: non-null pointer to a caller's unsigned int.
            unsafe { *out = value };
            SUCCESS
        }
    }
}

unsafe fn put_string(text: &str, buf: *mut c_char, len: c_uint) -> NvmlReturn {
    // SAFETY: NVML's contract: `buf` holds `len` bytes.
    if unsafe { write_c_string(text, buf, len as usize) } {
        SUCCESS
    } else if buf.is_null() {
        ERROR_INVALID_ARGUMENT
    } else {
        ERROR_INSUFFICIENT_SIZE
    }
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    init()
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    init()
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    if let Some(player) = player() {
        player.log("nvmlShutdown", None);
    }
    match INIT_COUNT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => SUCCESS,
        Err(_) => ERROR_UNINITIALIZED,
    }
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    let text: &'static [u8] = match result {
        SUCCESS => b"Success\0",
        ERROR_UNINITIALIZED => b"Uninitialized\0",
        ERROR_INVALID_ARGUMENT => b"Invalid Argument\0",
        ERROR_NOT_SUPPORTED => b"Not Supported\0",
        ERROR_INSUFFICIENT_SIZE => b"Insufficient Size\0",
        15 => b"GPU is lost\0",
        ERROR_ARGUMENT_VERSION_MISMATCH => b"Argument version mismatch\0",
        _ => b"Unknown Error\0",
    };
    text.as_ptr().cast()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(buf: *mut c_char, len: c_uint) -> NvmlReturn {
    match ready("nvmlSystemGetDriverVersion") {
        // SAFETY: forwarded caller buffer.
        Ok(player) => unsafe { put_string(&player.script.driver_version, buf, len) },
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(buf: *mut c_char, len: c_uint) -> NvmlReturn {
    match ready("nvmlSystemGetNVMLVersion") {
        Ok(player) => {
            let version = format!("12.{}", player.script.driver_version);
            // SAFETY: forwarded caller buffer.
            unsafe { put_string(&version, buf, len) }
        }
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    match ready("nvmlDeviceGetCount_v2") {
        // SAFETY: forwarded caller pointer.
        Ok(player) => unsafe { put(count, Some(player.device_count() as u32)) },
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    let player = match ready("nvmlDeviceGetHandleByIndex_v2") {
        Ok(player) => player,
        Err(code) => return code,
    };
    if device.is_null() || index as usize >= player.device_count() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null pointer to the caller's handle; the address stays inside HANDLES.
    unsafe { *device = HANDLES.as_ptr().add(index as usize) };
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: NvmlDevice, index: *mut c_uint) -> NvmlReturn {
    let player = match ready("nvmlDeviceGetIndex") {
        Ok(player) => player,
        Err(code) => return code,
    };
    match device_index(device, player) {
        // SAFETY: forwarded caller pointer.
        Some(i) => unsafe { put(index, Some(i as u32)) },
        None => ERROR_INVALID_ARGUMENT,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: NvmlDevice,
    buf: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller buffer.
    with_frame("nvmlDeviceGetName", device, |d, _| unsafe {
        put_string(&d.name, buf, len)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: NvmlDevice,
    buf: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller buffer.
    with_frame("nvmlDeviceGetUUID", device, |d, _| unsafe {
        put_string(&d.uuid, buf, len)
    })
}

/// `nvmlMemory_t`.
#[repr(C)]
pub struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}

/// (total, free, used) in bytes.
fn memory(device: &DeviceScript, frame: &Frame) -> Option<(u64, u64, u64)> {
    let total = device.memory_total_mb * MIB;
    let used = frame.memory_used_mb? * MIB;
    Some((total, total.saturating_sub(used), used))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: NvmlDevice,
    out: *mut Memory,
) -> NvmlReturn {
    with_frame("nvmlDeviceGetMemoryInfo", device, |d, f| {
        match (out.is_null(), memory(d, f)) {
            (true, _) => ERROR_INVALID_ARGUMENT,
            (false, None) => ERROR_NOT_SUPPORTED,
            (false, Some((total, free, used))) => {
                // SAFETY: non-null pointer to the caller's nvmlMemory_t.
                unsafe { *out = Memory { total, free, used } };
                SUCCESS
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: NvmlDevice,
    out: *mut MemoryV2,
) -> NvmlReturn {
    with_frame("nvmlDeviceGetMemoryInfo_v2", device, |d, f| {
        if out.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null pointer to the caller's versioned struct; read its version first.
        if unsafe { (*out).version } != MEMORY_V2_VERSION {
            return ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        match memory(d, f) {
            None => ERROR_NOT_SUPPORTED,
            Some((total, free, used)) => {
                // SAFETY: as above.
                unsafe {
                    *out = MemoryV2 {
                        version: MEMORY_V2_VERSION,
                        total,
                        reserved: 0,
                        free,
                        used,
                    }
                };
                SUCCESS
            }
        }
    })
}

/// `nvmlUtilization_t`.
#[repr(C)]
pub struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: NvmlDevice,
    out: *mut Utilization,
) -> NvmlReturn {
    with_frame("nvmlDeviceGetUtilizationRates", device, |_, f| {
        match (
            out.is_null(),
            f.gpu_utilization,
            f.memory_controller_utilization,
        ) {
            (true, _, _) => ERROR_INVALID_ARGUMENT,
            (false, Some(gpu), Some(memory)) => {
                // SAFETY: non-null pointer to the caller's nvmlUtilization_t.
                unsafe { *out = Utilization { gpu, memory } };
                SUCCESS
            }
            _ => ERROR_NOT_SUPPORTED,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: NvmlDevice,
    sensor: c_uint,
    out: *mut c_uint,
) -> NvmlReturn {
    with_frame("nvmlDeviceGetTemperature", device, |_, f| {
        if sensor != 0 {
            return ERROR_INVALID_ARGUMENT; // only NVML_TEMPERATURE_GPU exists
        }
        // SAFETY: forwarded caller pointer.
        unsafe { put(out, f.temperature) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: NvmlDevice,
    out: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller pointer.
    with_frame("nvmlDeviceGetPowerUsage", device, |_, f| unsafe {
        put(out, f.power_draw_mw)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: NvmlDevice,
    out: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller pointer.
    with_frame("nvmlDeviceGetEnforcedPowerLimit", device, |_, f| unsafe {
        put(out, f.power_limit_mw)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: NvmlDevice,
    out: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller pointer.
    with_frame("nvmlDeviceGetPowerManagementLimit", device, |_, f| unsafe {
        put(out, f.power_limit_mw)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: NvmlDevice,
    clock: c_uint,
    out: *mut c_uint,
) -> NvmlReturn {
    with_frame("nvmlDeviceGetClockInfo", device, |_, f| {
        let value = match clock {
            1 => f.sm_clock_mhz,     // NVML_CLOCK_SM
            2 => f.memory_clock_mhz, // NVML_CLOCK_MEM
            0 | 3 => None,           // graphics, video: not scripted
            _ => return ERROR_INVALID_ARGUMENT,
        };
        // SAFETY: forwarded caller pointer.
        unsafe { put(out, value) }
    })
}

/// `nvmlProcessInfo_t` (v2 and v3 share it).
#[repr(C)]
pub struct ProcessInfo {
    pid: c_uint,
    used_gpu_memory: u64,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

unsafe fn running_processes(
    function: &str,
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> NvmlReturn {
    with_frame(function, device, |_, f| {
        if count.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        let needed = f.processes.len() as c_uint;
        // SAFETY: non-null pointer to the caller's count.
        let room = unsafe { *count };
        // SAFETY: as above.
        unsafe { *count = needed };
        if needed == 0 {
            return SUCCESS;
        }
        if infos.is_null() || room < needed {
            return ERROR_INSUFFICIENT_SIZE;
        }
        for (i, process) in f.processes.iter().enumerate() {
            // SAFETY: the caller said `infos` has room for `room >= needed` entries.
            unsafe {
                *infos.add(i) = ProcessInfo {
                    pid: process.pid.resolve(),
                    used_gpu_memory: process.used_memory_mb * MIB,
                    gpu_instance_id: u32::MAX,
                    compute_instance_id: u32::MAX,
                }
            };
        }
        SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> NvmlReturn {
    // SAFETY: forwarded caller pointers.
    unsafe {
        running_processes(
            "nvmlDeviceGetComputeRunningProcesses_v3",
            device,
            count,
            infos,
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> NvmlReturn {
    // SAFETY: forwarded caller pointers.
    unsafe {
        running_processes(
            "nvmlDeviceGetComputeRunningProcesses_v2",
            device,
            count,
            infos,
        )
    }
}
