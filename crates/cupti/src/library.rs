//! CUPTI's functions, loaded at run time with `libloading` and kept for the life of the
//! process (the library is never unloaded: CUPTI keeps threads and callbacks of its own).
// dlopen and the function pointers it gives are unsafe by nature.
#![allow(unsafe_code)]

use core::ffi::c_void;
use std::path::Path;

use crate::error::{CuptiError, Result};
use crate::layout::{
    Activity, BufferCompletedFn, BufferRequestedFn, CuptiResult, SubscriberCallbackFn, TimestampFn,
};

/// The names tried, in order, after the one the configuration gives: CUDA 12's soname, 13's,
/// then the development link. One loaded already (torch's, from the `nvidia-cuda-cupti`
/// wheel) is found by its soname.
pub const DEFAULT_NAMES: [&str; 3] = ["libcupti.so.12", "libcupti.so.13", "libcupti.so"];

/// The functions of the Activity API the tracer calls.
#[derive(Clone, Copy)]
pub struct Api {
    pub get_version: unsafe extern "C" fn(*mut u32) -> CuptiResult,
    pub subscribe:
        unsafe extern "C" fn(*mut *mut c_void, SubscriberCallbackFn, *mut c_void) -> CuptiResult,
    pub unsubscribe: unsafe extern "C" fn(*mut c_void) -> CuptiResult,
    pub register_callbacks:
        unsafe extern "C" fn(BufferRequestedFn, BufferCompletedFn) -> CuptiResult,
    /// CUDA 12.4 and newer; without it, CUPTI's own clock is mapped at each flush.
    pub register_timestamp: Option<unsafe extern "C" fn(TimestampFn) -> CuptiResult>,
    pub get_timestamp: unsafe extern "C" fn(*mut u64) -> CuptiResult,
    pub enable: unsafe extern "C" fn(u32) -> CuptiResult,
    pub disable: unsafe extern "C" fn(u32) -> CuptiResult,
    pub flush_all: unsafe extern "C" fn(u32) -> CuptiResult,
    pub next_record: unsafe extern "C" fn(*mut u8, usize, *mut *mut Activity) -> CuptiResult,
    pub dropped_records: unsafe extern "C" fn(*mut c_void, u32, *mut usize) -> CuptiResult,
    pub push_external: unsafe extern "C" fn(u32, u64) -> CuptiResult,
    pub pop_external: unsafe extern "C" fn(u32, *mut u64) -> CuptiResult,
}

/// Loads the first library of `configured` then `DEFAULT_NAMES` that opens.
pub fn load(configured: Option<&Path>) -> Result<Api> {
    let mut tried = Vec::new();
    let names = configured
        .map(|p| p.as_os_str().to_owned())
        .into_iter()
        .chain(DEFAULT_NAMES.iter().map(Into::into));
    for name in names {
        tried.push(name.to_string_lossy().into_owned());
        // SAFETY: loading runs the library's initialisers; a CUPTI (or the fake the tests
        // name) has none that touch our state. It is loaded off the host's threads.
        if let Ok(library) = unsafe { libloading::Library::new(&name) } {
            let api = symbols(&library, &name.to_string_lossy());
            // Kept loaded for good: its records and callbacks outlive any scope here.
            std::mem::forget(library);
            return api;
        }
    }
    Err(CuptiError::NotFound { tried })
}

fn symbols(library: &libloading::Library, name: &str) -> Result<Api> {
    fn get<T: Copy>(library: &libloading::Library, name: &str, symbol: &'static str) -> Result<T> {
        // SAFETY: each symbol is read with the type of its C declaration in cupti_activity.h
        // (the `Api` fields); the library stays loaded for good.
        unsafe { library.get::<T>(symbol.as_bytes()) }
            .map(|s| *s)
            .map_err(|_| CuptiError::MissingSymbol {
                library: name.to_owned(),
                symbol,
            })
    }
    Ok(Api {
        get_version: get(library, name, "cuptiGetVersion")?,
        subscribe: get(library, name, "cuptiSubscribe")?,
        unsubscribe: get(library, name, "cuptiUnsubscribe")?,
        register_callbacks: get(library, name, "cuptiActivityRegisterCallbacks")?,
        register_timestamp: get(library, name, "cuptiActivityRegisterTimestampCallback").ok(),
        get_timestamp: get(library, name, "cuptiGetTimestamp")?,
        enable: get(library, name, "cuptiActivityEnable")?,
        disable: get(library, name, "cuptiActivityDisable")?,
        flush_all: get(library, name, "cuptiActivityFlushAll")?,
        next_record: get(library, name, "cuptiActivityGetNextRecord")?,
        dropped_records: get(library, name, "cuptiActivityGetNumDroppedRecords")?,
        push_external: get(library, name, "cuptiActivityPushExternalCorrelationId")?,
        pop_external: get(library, name, "cuptiActivityPopExternalCorrelationId")?,
    })
}

/// `code` as a `Result`, naming the function that returned it.
pub fn check(function: &'static str, code: CuptiResult) -> Result<()> {
    if code == crate::layout::SUCCESS {
        Ok(())
    } else {
        Err(CuptiError::Call { function, code })
    }
}
