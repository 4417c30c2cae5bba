//! NVML's GPM functions (Hopper and newer): a sample remembers the frame it was taken in, and
//! the metrics between two samples are the figures scripted in the second one's frame.

use std::ffi::{c_char, c_uint, c_void};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use fake_gpu_script::{DeviceScript, Frame};

use crate::{
    with_frame, NvmlDevice, NvmlReturn, ERROR_ARGUMENT_VERSION_MISMATCH, ERROR_INVALID_ARGUMENT,
    ERROR_NOT_SUPPORTED, SUCCESS,
};

/// `NVML_GPM_METRICS_GET_VERSION` and `NVML_GPM_SUPPORT_VERSION`.
const GPM_VERSION: c_uint = 1;
/// `NVML_GPM_METRIC_MAX`: the room in `nvmlGpmMetricsGet_t`.
const METRIC_MAX: usize = 210;

/// The script's names of the metric ids it knows (`nvmlGpmMetricId_t`).
fn metric_name(id: c_uint) -> Option<&'static str> {
    match id {
        1 => Some("GRAPHICS_UTIL"),
        2 => Some("SM_UTIL"),
        3 => Some("SM_OCCUPANCY"),
        5 => Some("ANY_TENSOR_UTIL"),
        10 => Some("DRAM_BW_UTIL"),
        _ => None,
    }
}

fn supports_gpm(device: &DeviceScript) -> bool {
    device.frames.iter().any(|f| !f.gpm.is_empty())
}

/// An `nvmlGpmSample_t`: the frame and device of its last `nvmlGpmSampleGet`, null before one.
struct Sample {
    frame: AtomicPtr<Frame>,
    device: AtomicUsize,
}

#[repr(C)]
pub struct GpmSupport {
    version: c_uint,
    is_supported_device: c_uint,
}

#[repr(C)]
pub struct GpmMetric {
    metric_id: c_uint,
    nvml_return: NvmlReturn,
    value: f64,
    short_name: *mut c_char,
    long_name: *mut c_char,
    unit: *mut c_char,
}

#[repr(C)]
pub struct GpmMetricsGet {
    version: c_uint,
    num_metrics: c_uint,
    sample1: *mut c_void,
    sample2: *mut c_void,
    metrics: [GpmMetric; METRIC_MAX],
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: NvmlDevice,
    out: *mut GpmSupport,
) -> NvmlReturn {
    with_frame("nvmlGpmQueryDeviceSupport", device, |script, _| {
        if out.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null pointer to the caller's nvmlGpmSupport_t.
        let out = unsafe { &mut *out };
        if out.version != GPM_VERSION {
            return ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        out.is_supported_device = c_uint::from(supports_gpm(script));
        SUCCESS
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(out: *mut *mut c_void) -> NvmlReturn {
    if out.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let sample = Box::new(Sample {
        frame: AtomicPtr::new(std::ptr::null_mut()),
        device: AtomicUsize::new(0),
    });
    // SAFETY: non-null pointer to the caller's nvmlGpmSample_t.
    unsafe { *out = Box::into_raw(sample).cast() };
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleFree(sample: *mut c_void) -> NvmlReturn {
    if sample.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: NVML's contract: a sample from nvmlGpmSampleAlloc, freed once.
    drop(unsafe { Box::from_raw(sample.cast::<Sample>()) });
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleGet(device: NvmlDevice, sample: *mut c_void) -> NvmlReturn {
    let index = crate::player().and_then(|player| crate::device_index(device, player));
    with_frame("nvmlGpmSampleGet", device, |script, frame| {
        if sample.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        if !supports_gpm(script) {
            return ERROR_NOT_SUPPORTED;
        }
        // SAFETY: NVML's contract: a live sample from nvmlGpmSampleAlloc.
        let sample = unsafe { &*sample.cast::<Sample>() };
        let frame: *const Frame = frame;
        sample.device.store(index.unwrap_or(0), Ordering::Relaxed);
        sample.frame.store(frame.cast_mut(), Ordering::Release);
        SUCCESS
    })
}

/// The frame a sample was taken in and its device, or `None` for a sample never filled.
///
/// # Safety
/// `sample` is null or a live sample from `nvmlGpmSampleAlloc`.
unsafe fn frame_of(sample: *mut c_void) -> Option<(&'static Frame, usize)> {
    if sample.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    let sample = unsafe { &*sample.cast::<Sample>() };
    let frame = sample.frame.load(Ordering::Acquire);
    // SAFETY: frames live in the player, which lives for the process.
    let frame = unsafe { frame.as_ref() }?;
    Some((frame, sample.device.load(Ordering::Relaxed)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMetricsGet(request: *mut GpmMetricsGet) -> NvmlReturn {
    if request.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null pointer to the caller's nvmlGpmMetricsGet_t.
    let request = unsafe { &mut *request };
    if request.version != GPM_VERSION {
        return ERROR_ARGUMENT_VERSION_MISMATCH;
    }
    let count = request.num_metrics as usize;
    // SAFETY: the samples are the caller's, from nvmlGpmSampleAlloc.
    let (first, second) = unsafe { (frame_of(request.sample1), frame_of(request.sample2)) };
    let (Some(_), Some((frame, device))) = (first, second) else {
        return ERROR_INVALID_ARGUMENT;
    };
    if count > METRIC_MAX {
        return ERROR_INVALID_ARGUMENT;
    }
    // The script's errors and delays for this function, by the second sample's device.
    let Some(player) = crate::player() else {
        return crate::ERROR_UNINITIALIZED;
    };
    if let Err(code) = player.enter("nvmlGpmMetricsGet", device) {
        return code;
    }
    for metric in &mut request.metrics[..count] {
        let value = metric_name(metric.metric_id).and_then(|name| frame.gpm.get(name));
        metric.short_name = std::ptr::null_mut();
        metric.long_name = std::ptr::null_mut();
        metric.unit = std::ptr::null_mut();
        match value {
            Some(&value) => {
                metric.value = value;
                metric.nvml_return = SUCCESS;
            }
            None => {
                metric.value = 0.0;
                metric.nvml_return = ERROR_NOT_SUPPORTED;
            }
        }
    }
    SUCCESS
}
