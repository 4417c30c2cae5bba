//! Every unsafe call of the amd-smi loader: loading the library, looking its functions up,
//! and calling them with out-buffers of the right size. The rest of `amdsmi` is safe code.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr, OsString};

use libloading::Library;

pub(super) type Status = u32;
pub(super) const STATUS_SUCCESS: Status = 0;
const INIT_AMD_GPUS: u64 = 1 << 1;
/// More room than any known version of the structs we pass.
const BUFFER_BYTES: usize = 4096;

/// An amd-smi socket or processor handle: an opaque id.
#[derive(Debug, Clone, Copy)]
pub(super) struct Handle(*mut c_void);

// SAFETY: processor handles are opaque ids that amd-smi accepts from any thread.
unsafe impl Send for Handle {}

type InitFn = unsafe extern "C" fn(u64) -> u32;
type VersionFn = unsafe extern "C" fn(*mut u8) -> u32;
type SocketsFn = unsafe extern "C" fn(*mut u32, *mut *mut c_void) -> u32;
type ProcessorsFn = unsafe extern "C" fn(*mut c_void, *mut u32, *mut *mut c_void) -> u32;
type StructFn = unsafe extern "C" fn(*mut c_void, *mut u8) -> u32;
type MemoryFn = unsafe extern "C" fn(*mut c_void, u32, *mut u64) -> u32;
type TemperatureFn = unsafe extern "C" fn(*mut c_void, u32, u32, *mut i64) -> u32;
type UuidFn = unsafe extern "C" fn(*mut c_void, *mut u32, *mut c_char) -> u32;
type StatusTextFn = unsafe extern "C" fn(u32, *mut *const c_char) -> u32;

/// A zeroed, 8-byte aligned buffer for an out-struct, larger than any version of those we
/// pass (every struct is then read at fixed offsets).
#[repr(C, align(8))]
pub(super) struct Buffer([u8; BUFFER_BYTES]);

impl Buffer {
    pub(super) fn new() -> Box<Buffer> {
        Box::new(Buffer([0; BUFFER_BYTES]))
    }

    /// Sets every byte: fields the library does not write then read as `byte`.
    pub(super) fn fill(&mut self, byte: u8) {
        self.0.fill(byte);
    }

    pub(super) fn u32_at(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0[offset..offset + 4].try_into().expect("4 bytes"))
    }

    pub(super) fn u64_at(&self, offset: usize) -> u64 {
        u64::from_ne_bytes(self.0[offset..offset + 8].try_into().expect("8 bytes"))
    }

    /// A NUL-terminated string of at most `max` bytes at `offset`.
    pub(super) fn text_at(&self, offset: usize, max: usize) -> Option<String> {
        let bytes = &self.0[offset..offset + max];
        let end = bytes.iter().position(|&b| b == 0)?;
        let text = String::from_utf8_lossy(&bytes[..end]).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

/// The loaded library's functions (plain function pointers into a library that is never
/// unloaded; amd-smi's functions are documented as thread safe). Optional ones are `None`
/// when the library lacks them.
pub(super) struct Api {
    sockets: SocketsFn,
    processors: ProcessorsFn,
    activity: Option<StructFn>,
    memory_total: Option<MemoryFn>,
    memory_usage: Option<MemoryFn>,
    temperature: Option<TemperatureFn>,
    power: Option<StructFn>,
    asic_info: Option<StructFn>,
    uuid: Option<UuidFn>,
    status_text: Option<StatusTextFn>,
}

fn symbol<T: Copy>(library: &'static Library, name: &str) -> Result<T, String> {
    let mut c_name = name.as_bytes().to_vec();
    c_name.push(0);
    // SAFETY: every `T` used with this private function is the exact C signature of `name`
    // in amdsmi.h (all versions agree on these signatures).
    unsafe { library.get::<T>(&c_name) }
        .map(|s| *s)
        .map_err(|err| format!("{name}: {err}"))
}

impl Api {
    /// Loads the library at `path` (never unloaded), initialises it for AMD GPUs and reads
    /// its version: the first four u32 of `amdsmi_version_t`.
    pub(super) fn load(path: &OsString) -> Result<(Api, [u32; 4]), String> {
        // SAFETY: loading runs the library's constructors; amd-smi's only set up its state.
        let library = unsafe { Library::new(path) }.map_err(|e| e.to_string())?;
        let library: &'static Library = Box::leak(Box::new(library));
        let init: InitFn = symbol(library, "amdsmi_init")?;
        let version: VersionFn = symbol(library, "amdsmi_get_lib_version")?;
        // SAFETY: amdsmi_init(uint64_t flags).
        let status = unsafe { init(INIT_AMD_GPUS) };
        if status != STATUS_SUCCESS {
            return Err(format!("amdsmi_init failed with status {status}"));
        }
        let mut buffer = Buffer::new();
        // SAFETY: the buffer is larger and more aligned than amdsmi_version_t of any version.
        let status = unsafe { version(buffer.0.as_mut_ptr()) };
        if status != STATUS_SUCCESS {
            return Err(format!(
                "amdsmi_get_lib_version failed with status {status}"
            ));
        }
        let words = [0, 4, 8, 12].map(|offset| buffer.u32_at(offset));
        let api = Api {
            sockets: symbol(library, "amdsmi_get_socket_handles")?,
            processors: symbol(library, "amdsmi_get_processor_handles")?,
            activity: symbol(library, "amdsmi_get_gpu_activity").ok(),
            memory_total: symbol(library, "amdsmi_get_gpu_memory_total").ok(),
            memory_usage: symbol(library, "amdsmi_get_gpu_memory_usage").ok(),
            temperature: symbol(library, "amdsmi_get_temp_metric").ok(),
            power: symbol(library, "amdsmi_get_power_info").ok(),
            asic_info: symbol(library, "amdsmi_get_gpu_asic_info").ok(),
            uuid: symbol(library, "amdsmi_get_gpu_device_uuid").ok(),
            status_text: symbol(library, "amdsmi_status_code_to_string").ok(),
        };
        Ok((api, words))
    }

    /// The library's text for `status`, where it has one.
    pub(super) fn status_text(&self, status: Status) -> Option<String> {
        let status_text = self.status_text?;
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: amdsmi_status_code_to_string(status, const char **) stores a pointer to a
        // static string.
        if unsafe { status_text(status, &mut text) } != STATUS_SUCCESS || text.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated static string from the library.
        let text = unsafe { CStr::from_ptr(text) };
        Some(text.to_string_lossy().into_owned())
    }

    /// Every socket handle.
    pub(super) fn socket_handles(&self) -> Result<Vec<Handle>, Status> {
        let mut count = 0u32;
        // SAFETY: a NULL array asks for the count only.
        let status = unsafe { (self.sockets)(&mut count, std::ptr::null_mut()) };
        if status != STATUS_SUCCESS {
            return Err(status);
        }
        let mut handles = vec![std::ptr::null_mut(); count as usize];
        // SAFETY: the array holds `count` handles.
        let status = unsafe { (self.sockets)(&mut count, handles.as_mut_ptr()) };
        if status != STATUS_SUCCESS {
            return Err(status);
        }
        handles.truncate(count as usize);
        Ok(handles.into_iter().map(Handle).collect())
    }

    /// Every processor handle of `socket`.
    pub(super) fn processor_handles(&self, socket: Handle) -> Result<Vec<Handle>, Status> {
        let mut count = 0u32;
        // SAFETY: a NULL array asks for the count only.
        let status = unsafe { (self.processors)(socket.0, &mut count, std::ptr::null_mut()) };
        if status != STATUS_SUCCESS {
            return Err(status);
        }
        let mut handles = vec![std::ptr::null_mut(); count as usize];
        // SAFETY: the array holds `count` handles.
        let status = unsafe { (self.processors)(socket.0, &mut count, handles.as_mut_ptr()) };
        if status != STATUS_SUCCESS {
            return Err(status);
        }
        handles.truncate(count as usize);
        Ok(handles.into_iter().map(Handle).collect())
    }

    /// `amdsmi_get_gpu_activity` into `buffer`; `None` when the library lacks it.
    pub(super) fn activity(&self, handle: Handle, buffer: &mut Buffer) -> Option<Status> {
        let call = self.activity?;
        // SAFETY: amdsmi_engine_usage_t (gfx, umc, mm, reserved[13]: 64 bytes in every
        // version) fits the buffer.
        Some(unsafe { call(handle.0, buffer.0.as_mut_ptr()) })
    }

    /// `amdsmi_get_gpu_memory_total` (or `_usage`) of `kind`, bytes.
    pub(super) fn memory(
        &self,
        handle: Handle,
        total: bool,
        kind: u32,
        bytes: &mut u64,
    ) -> Option<Status> {
        let call = if total {
            self.memory_total?
        } else {
            self.memory_usage?
        };
        // SAFETY: (handle, amdsmi_memory_type_t, uint64_t *) in every version.
        Some(unsafe { call(handle.0, kind, bytes) })
    }

    /// `amdsmi_get_temp_metric`, °C.
    pub(super) fn temperature(
        &self,
        handle: Handle,
        sensor: u32,
        metric: u32,
        celsius: &mut i64,
    ) -> Option<Status> {
        let call = self.temperature?;
        // SAFETY: (handle, amdsmi_temperature_type_t, amdsmi_temperature_metric_t, int64_t *).
        Some(unsafe { call(handle.0, sensor, metric, celsius) })
    }

    /// `amdsmi_get_power_info` into `buffer`.
    pub(super) fn power_info(&self, handle: Handle, buffer: &mut Buffer) -> Option<Status> {
        let call = self.power?;
        // SAFETY: amdsmi_power_info_t of every known version (at most 192 bytes) fits.
        Some(unsafe { call(handle.0, buffer.0.as_mut_ptr()) })
    }

    /// `amdsmi_get_gpu_asic_info` into `buffer`.
    pub(super) fn asic_info(&self, handle: Handle, buffer: &mut Buffer) -> Option<Status> {
        let call = self.asic_info?;
        // SAFETY: amdsmi_asic_info_t (under 1 KiB in every version) fits.
        Some(unsafe { call(handle.0, buffer.0.as_mut_ptr()) })
    }

    /// `amdsmi_get_gpu_device_uuid` into `buffer`, which it is told holds 256 bytes.
    pub(super) fn device_uuid(&self, handle: Handle, buffer: &mut Buffer) -> Option<Status> {
        let call = self.uuid?;
        let mut length = 256u32;
        // SAFETY: the buffer holds more than `length` bytes (AMDSMI_GPU_UUID_SIZE is 38).
        Some(unsafe { call(handle.0, &mut length, buffer.0.as_mut_ptr().cast()) })
    }
}
