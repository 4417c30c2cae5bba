//! CUPTI's record layouts and constants, from the headers of the pinned
//! `nvidia-cuda-cupti-cu12==12.9.79` (see `docs/cupti-activity-api.md`): the one source the
//! tracer and the fake CUPTI (`crates/fake-cupti`) both read.
//!
//! Every record is `PACKED_ALIGNMENT` in C (packed, aligned to 8), and every member is
//! naturally aligned, so plain `repr(C)` gives the same layout; the asserts below prove it.
//! Enums are `u32`: unknown values can arrive.

use core::ffi::{c_char, c_void};

pub type CuptiResult = u32;

pub const SUCCESS: CuptiResult = 0;
pub const ERROR_INVALID_PARAMETER: CuptiResult = 1;
pub const ERROR_INVALID_OPERATION: CuptiResult = 7;
pub const ERROR_OUT_OF_MEMORY: CuptiResult = 8;
/// Also what `cuptiActivityGetNextRecord` returns at the end of a buffer.
pub const ERROR_MAX_LIMIT_REACHED: CuptiResult = 12;
pub const ERROR_NOT_COMPATIBLE: CuptiResult = 14;
/// A driver older than the CUPTI.
pub const ERROR_NOT_INITIALIZED: CuptiResult = 15;
pub const ERROR_QUEUE_EMPTY: CuptiResult = 18;
/// `cuptiActivityGetNextRecord`: an incomplete or invalid record.
pub const ERROR_INVALID_KIND: CuptiResult = 21;
pub const ERROR_NOT_SUPPORTED: CuptiResult = 27;
pub const ERROR_INSUFFICIENT_PRIVILEGES: CuptiResult = 35;
/// Another CUPTI client (Nsight, a profiler, an injected tool) holds the subscription.
pub const ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED: CuptiResult = 39;
pub const ERROR_UNKNOWN: CuptiResult = 999;

/// `CUpti_ActivityKind` values used here.
pub mod kind {
    pub const MEMCPY: u32 = 1;
    pub const MEMSET: u32 = 2;
    /// Serialises every kernel on the GPU: never enabled.
    pub const KERNEL: u32 = 3;
    pub const DRIVER: u32 = 4;
    pub const RUNTIME: u32 = 5;
    pub const CONCURRENT_KERNEL: u32 = 10;
    pub const OVERHEAD: u32 = 17;
    pub const EXTERNAL_CORRELATION: u32 = 39;
    pub const INTERNAL_LAUNCH_API: u32 = 48;
}

/// `CUpti_runtime_api_trace_cbid` values of the launches (`cupti_runtime_cbid.h`).
pub mod runtime_cbid {
    pub const LAUNCH_KERNEL_V7000: u32 = 211;
    pub const GRAPH_LAUNCH_V10000: u32 = 311;
}

/// `CUpti_ExternalCorrelationKind`: kineto (the torch profiler) uses CUSTOM0 and CUSTOM1.
pub const EXTERNAL_KIND_CUSTOM2: u32 = 5;

/// `CUPTI_ACTIVITY_FLAG_FLUSH_FORCED`: flush records not yet completed too.
pub const FLUSH_FORCED: u32 = 1;

/// The API versions whose kernel record starts with `Kernel9`'s 208 bytes: CUDA 12.0 (18 in
/// its header, 19 in its comment) to 12.9 Update 1 (28), and CUDA 13.0 (130001) to 13.5
/// (130500), whose newer records only append fields. Any other version is refused.
pub fn version_is_known(version: u32) -> bool {
    (18..=28).contains(&version) || (130_000..=130_599).contains(&version)
}

/// `CUpti_Activity`: the header of every record.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    pub kind: u32,
}

/// `CUpti_ActivityKernel9` (cupti_activity.h:2828-3127), the kernel record of every 12.x.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ActivityKernel9 {
    pub kind: u32,
    /// Low nibble requested, high nibble executed.
    pub cache_config: u8,
    pub shared_memory_config: u8,
    pub registers_per_thread: u16,
    pub partitioned_global_cache_requested: u32,
    pub partitioned_global_cache_executed: u32,
    /// Device start and end, in the timestamp callback's clock (ns); both 0 when the device
    /// had no memory to time it.
    pub start: u64,
    pub end: u64,
    pub completed: u64,
    pub device_id: u32,
    pub context_id: u32,
    pub stream_id: u32,
    pub grid_x: i32,
    pub grid_y: i32,
    pub grid_z: i32,
    pub block_x: i32,
    pub block_y: i32,
    pub block_z: i32,
    pub static_shared_memory: i32,
    pub dynamic_shared_memory: i32,
    pub local_memory_per_thread: u32,
    pub local_memory_total: u32,
    pub correlation_id: u32,
    pub grid_id: i64,
    /// Owned by CUPTI, shared by every record of the same kernel.
    pub name: *const c_char,
    pub reserved0: *mut c_void,
    pub queued: u64,
    pub submitted: u64,
    pub launch_type: u8,
    pub is_shared_memory_carveout_requested: u8,
    pub shared_memory_carveout_requested: u8,
    pub padding: u8,
    pub shared_memory_executed: u32,
    /// 0 unless launched from a CUDA graph.
    pub graph_node_id: u64,
    pub shmem_limit_config: u32,
    pub graph_id: u32,
    pub p_access_policy_window: *mut c_void,
    pub channel_id: u32,
    pub channel_type: u32,
    pub cluster_x: u32,
    pub cluster_y: u32,
    pub cluster_z: u32,
    pub cluster_scheduling_policy: u32,
    pub local_memory_total_v2: u64,
    pub max_potential_cluster_size: u32,
    pub max_active_clusters: u32,
}

/// `CUpti_ActivityAPI`: a runtime or driver call (RUNTIME, DRIVER, INTERNAL_LAUNCH_API).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ActivityApi {
    pub kind: u32,
    pub cbid: u32,
    pub start: u64,
    pub end: u64,
    pub process_id: u32,
    pub thread_id: u32,
    pub correlation_id: u32,
    pub return_value: u32,
}

/// `CUpti_ActivityExternalCorrelation`: precedes the API record of a launch made while an
/// external id was pushed; `correlation_id` is that API record's (and its kernels').
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ActivityExternalCorrelation {
    pub kind: u32,
    pub external_kind: u32,
    pub external_id: u64,
    pub correlation_id: u32,
    pub reserved: u32,
}

/// The size `cuptiActivityGetNextRecord` steps over for a record of `kind` in 12.9 (the fake's
/// table; the tracer never computes a stride); `None` for a kind this table does not know.
pub fn record_size(kind: u32) -> Option<usize> {
    match kind {
        kind::KERNEL | kind::CONCURRENT_KERNEL => Some(size_of::<ActivityKernel9>()),
        kind::RUNTIME | kind::DRIVER | kind::INTERNAL_LAUNCH_API => Some(size_of::<ActivityApi>()),
        kind::EXTERNAL_CORRELATION => Some(size_of::<ActivityExternalCorrelation>()),
        kind::MEMCPY => Some(96),
        kind::MEMSET => Some(88),
        kind::OVERHEAD => Some(56),
        _ => None,
    }
}

/// Records are aligned to 8 in a buffer, and buffers are handed out aligned to 8.
pub const RECORD_ALIGNMENT: usize = 8;

/// The C function types of the Activity API that take callbacks.
pub type BufferRequestedFn =
    unsafe extern "C" fn(buffer: *mut *mut u8, size: *mut usize, max_num_records: *mut usize);
pub type BufferCompletedFn = unsafe extern "C" fn(
    context: *mut c_void,
    stream_id: u32,
    buffer: *mut u8,
    size: usize,
    valid_size: usize,
);
pub type TimestampFn = unsafe extern "C" fn() -> u64;
pub type SubscriberCallbackFn =
    unsafe extern "C" fn(userdata: *mut c_void, domain: u32, cbid: u32, cbdata: *const c_void);

const _: () = {
    use core::mem::{align_of, offset_of};
    assert!(size_of::<Activity>() == 8 && align_of::<Activity>() == 8);
    assert!(size_of::<ActivityKernel9>() == 208 && align_of::<ActivityKernel9>() == 8);
    assert!(offset_of!(ActivityKernel9, registers_per_thread) == 6);
    assert!(offset_of!(ActivityKernel9, start) == 16);
    assert!(offset_of!(ActivityKernel9, end) == 24);
    assert!(offset_of!(ActivityKernel9, device_id) == 40);
    assert!(offset_of!(ActivityKernel9, stream_id) == 48);
    assert!(offset_of!(ActivityKernel9, grid_x) == 52);
    assert!(offset_of!(ActivityKernel9, block_x) == 64);
    assert!(offset_of!(ActivityKernel9, static_shared_memory) == 76);
    assert!(offset_of!(ActivityKernel9, dynamic_shared_memory) == 80);
    assert!(offset_of!(ActivityKernel9, correlation_id) == 92);
    assert!(offset_of!(ActivityKernel9, grid_id) == 96);
    assert!(offset_of!(ActivityKernel9, name) == 104);
    assert!(offset_of!(ActivityKernel9, launch_type) == 136);
    assert!(offset_of!(ActivityKernel9, graph_node_id) == 144);
    assert!(offset_of!(ActivityKernel9, graph_id) == 156);
    assert!(offset_of!(ActivityKernel9, local_memory_total_v2) == 192);
    assert!(offset_of!(ActivityKernel9, max_active_clusters) == 204);
    assert!(size_of::<ActivityApi>() == 40);
    assert!(offset_of!(ActivityApi, correlation_id) == 32);
    assert!(size_of::<ActivityExternalCorrelation>() == 24);
    assert!(offset_of!(ActivityExternalCorrelation, external_id) == 8);
    assert!(offset_of!(ActivityExternalCorrelation, correlation_id) == 16);
};
