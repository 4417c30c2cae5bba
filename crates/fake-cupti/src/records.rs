//! The records of a launch, made as CUPTI makes them: an external correlation record for each
//! external kind with an id pushed on the launching thread, the runtime API record, then the
//! kernel record(s), all sharing one correlation id. Also the clock, the enabled kinds, the
//! per-thread external id stacks and the interned kernel names.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use vllm_profiler_cupti::layout::{
    kind, runtime_cbid, ActivityApi, ActivityExternalCorrelation, ActivityKernel9, TimestampFn,
};

use crate::buffers::{self, Written};

// ---- enabled kinds ----

/// One bit per activity kind below 64 (12.9 has 56).
static ENABLED: AtomicU64 = AtomicU64::new(0);

/// The kinds `cuptiActivityEnable` takes: INVALID (0) and past 12.9's COUNT (56) are not.
pub fn kind_is_valid(activity_kind: u32) -> bool {
    (1..56).contains(&activity_kind)
}

pub fn set_enabled(activity_kind: u32, on: bool) {
    let bit = 1u64 << activity_kind;
    if on {
        ENABLED.fetch_or(bit, Ordering::SeqCst);
    } else {
        ENABLED.fetch_and(!bit, Ordering::SeqCst);
    }
}

pub fn enabled(activity_kind: u32) -> bool {
    activity_kind < 64 && ENABLED.load(Ordering::SeqCst) & (1u64 << activity_kind) != 0
}

// ---- clock ----

static TIMESTAMP: Mutex<Option<TimestampFn>> = Mutex::new(None);

pub fn set_timestamp_callback(callback: Option<TimestampFn>) {
    *TIMESTAMP.lock() = callback;
}

/// CUPTI's clock: the client's timestamp callback, or CLOCK_MONOTONIC in ns.
pub fn now() -> u64 {
    let callback = *TIMESTAMP.lock();
    if let Some(callback) = callback {
        // SAFETY: the client's timestamp callback, registered for exactly this call; no lock
        // is held.
        return unsafe { callback() };
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

// ---- external correlation stacks ----

/// `CUpti_ExternalCorrelationKind` values past INVALID (0) and below SIZE (6).
pub const EXTERNAL_KINDS: usize = 6;

pub fn external_kind_is_valid(external_kind: u32) -> bool {
    (1..EXTERNAL_KINDS as u32).contains(&external_kind)
}

thread_local! {
    static STACKS: RefCell<[Vec<u64>; EXTERNAL_KINDS]> = const { RefCell::new([const { Vec::new() }; EXTERNAL_KINDS]) };
}

/// Runs `body` on this thread's stacks; `None` once the thread is past its locals.
fn with_stacks<R>(body: impl FnOnce(&mut [Vec<u64>; EXTERNAL_KINDS]) -> R) -> Option<R> {
    STACKS
        .try_with(|stacks| stacks.try_borrow_mut().ok().map(|mut s| body(&mut s)))
        .ok()
        .flatten()
}

pub fn push_external(external_kind: u32, id: u64) {
    with_stacks(|stacks| stacks[external_kind as usize].push(id));
}

pub fn pop_external(external_kind: u32) -> Option<u64> {
    with_stacks(|stacks| stacks[external_kind as usize].pop()).flatten()
}

pub fn external_depth(external_kind: u32) -> u32 {
    if !external_kind_is_valid(external_kind) {
        return 0;
    }
    with_stacks(|stacks| stacks[external_kind as usize].len() as u32).unwrap_or(0)
}

/// (kind, top id) of each external kind with an id pushed on this thread, kind ascending.
fn external_tops() -> Vec<(u32, u64)> {
    with_stacks(|stacks| {
        (0..EXTERNAL_KINDS)
            .filter_map(|k| stacks[k].last().map(|&id| (k as u32, id)))
            .collect()
    })
    .unwrap_or_default()
}

// ---- names ----

static NAMES: Mutex<Option<HashMap<Vec<u8>, &'static CStr>>> = Mutex::new(None);

/// The library's copy of a kernel name, one per name, never freed (as CUPTI's are shared
/// by every record of a kernel). A null name is `?`.
///
/// # Safety
/// `name` must be null or a NUL-terminated string.
pub unsafe fn intern(name: *const c_char) -> *const c_char {
    let bytes = if name.is_null() {
        b"?".to_vec()
    } else {
        // SAFETY: the caller's NUL-terminated string.
        unsafe { CStr::from_ptr(name) }.to_bytes().to_vec()
    };
    let mut names = NAMES.lock();
    let names = names.get_or_insert_with(HashMap::new);
    if let Some(known) = names.get(&bytes) {
        return known.as_ptr();
    }
    // The bytes came from a C string, so they hold no NUL; "?" if they somehow do.
    let owned = CString::new(bytes.clone()).unwrap_or_else(|_| c"?".to_owned());
    let leaked: &'static CStr = Box::leak(owned.into_boxed_c_str());
    names.insert(bytes, leaked);
    leaked.as_ptr()
}

// ---- launches ----

static CORRELATION: AtomicU32 = AtomicU32::new(1);
static GRID_ID: AtomicI64 = AtomicI64::new(1);
static GRAPH_ID: AtomicU32 = AtomicU32::new(1);
static KERNELS_WRITTEN: AtomicU64 = AtomicU64::new(0);

pub fn kernels_written() -> u64 {
    KERNELS_WRITTEN.load(Ordering::SeqCst)
}

/// The kernel kind records are made for: CONCURRENT_KERNEL when enabled, else KERNEL.
fn kernel_kind() -> Option<u32> {
    [kind::CONCURRENT_KERNEL, kind::KERNEL]
        .into_iter()
        .find(|&k| enabled(k))
}

/// A kernel launch, as far as the records go.
pub struct Kernel {
    /// Interned.
    pub name: *const c_char,
    pub device: u32,
    pub stream: u32,
    pub duration_ns: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub registers: u16,
    pub static_shared: u32,
    pub dynamic_shared: u32,
}

/// Writes the external correlation and runtime API records of a launch through `cbid`, and
/// returns its correlation id; `None` (and nothing written) when no kernel kind is enabled.
fn begin_launch(cbid: u32) -> Option<(u32, u32)> {
    let kernel_kind = kernel_kind()?;
    let correlation_id = CORRELATION.fetch_add(1, Ordering::SeqCst);
    if enabled(kind::EXTERNAL_CORRELATION) {
        for (external_kind, external_id) in external_tops() {
            buffers::write(&ActivityExternalCorrelation {
                kind: kind::EXTERNAL_CORRELATION,
                external_kind,
                external_id,
                correlation_id,
                reserved: 0,
            });
        }
    }
    if enabled(kind::RUNTIME) {
        let now = now();
        buffers::write(&ActivityApi {
            kind: kind::RUNTIME,
            cbid,
            start: now,
            end: now,
            process_id: std::process::id(),
            // SAFETY: pthread_self has no preconditions.
            thread_id: unsafe { libc::pthread_self() } as u32,
            correlation_id,
            return_value: 0,
        });
    }
    Some((kernel_kind, correlation_id))
}

fn write_kernel(record: &ActivityKernel9) {
    if buffers::write(record) == Written::Yes {
        KERNELS_WRITTEN.fetch_add(1, Ordering::SeqCst);
    }
}

fn kernel_record(
    kernel_kind: u32,
    kernel: &Kernel,
    correlation_id: u32,
    start: u64,
) -> ActivityKernel9 {
    let end = start.saturating_add(kernel.duration_ns);
    let [grid_x, grid_y, grid_z] = kernel.grid.map(|v| v as i32);
    let [block_x, block_y, block_z] = kernel.block.map(|v| v as i32);
    ActivityKernel9 {
        kind: kernel_kind,
        cache_config: 0,
        shared_memory_config: 0,
        registers_per_thread: kernel.registers,
        partitioned_global_cache_requested: 0,
        partitioned_global_cache_executed: 0,
        start,
        end,
        completed: end,
        device_id: kernel.device,
        context_id: 1,
        stream_id: kernel.stream,
        grid_x,
        grid_y,
        grid_z,
        block_x,
        block_y,
        block_z,
        static_shared_memory: kernel.static_shared as i32,
        dynamic_shared_memory: kernel.dynamic_shared as i32,
        local_memory_per_thread: 0,
        local_memory_total: 0,
        correlation_id,
        grid_id: GRID_ID.fetch_add(1, Ordering::SeqCst),
        name: kernel.name,
        reserved0: std::ptr::null_mut(),
        queued: 0,
        submitted: 0,
        launch_type: 0,
        is_shared_memory_carveout_requested: 0,
        shared_memory_carveout_requested: 0,
        padding: 0,
        shared_memory_executed: 0,
        graph_node_id: 0,
        shmem_limit_config: 0,
        graph_id: 0,
        p_access_policy_window: std::ptr::null_mut(),
        channel_id: 0,
        channel_type: 0,
        cluster_x: 0,
        cluster_y: 0,
        cluster_z: 0,
        cluster_scheduling_policy: 0,
        local_memory_total_v2: 0,
        max_potential_cluster_size: 0,
        max_active_clusters: 0,
    }
}

/// One `cudaLaunchKernel`: its correlation id, or 0 when no kernel kind is enabled.
pub fn launch(kernel: &Kernel) -> u32 {
    let Some((kernel_kind, correlation_id)) = begin_launch(runtime_cbid::LAUNCH_KERNEL_V7000)
    else {
        return 0;
    };
    write_kernel(&kernel_record(kernel_kind, kernel, correlation_id, now()));
    correlation_id
}

/// One `cudaGraphLaunch` of `count` nodes of `kernel`, run back to back: its correlation id,
/// or 0 when no kernel kind is enabled.
pub fn launch_graph(kernel: &Kernel, count: u32) -> u32 {
    let Some((kernel_kind, correlation_id)) = begin_launch(runtime_cbid::GRAPH_LAUNCH_V10000)
    else {
        return 0;
    };
    let graph_id = GRAPH_ID.fetch_add(1, Ordering::SeqCst);
    let mut start = now();
    for node in 1..=count {
        let mut record = kernel_record(kernel_kind, kernel, correlation_id, start);
        record.graph_id = graph_id;
        record.graph_node_id = u64::from(node);
        start = record.end;
        write_kernel(&record);
    }
    correlation_id
}
