//! The tests' client of `libfake_cupti.so`: each test loads a fresh copy of the library (its
//! own global state, its own script), and plays the tracer's side of the buffer protocol with
//! a pool of buffers it can make refuse.
#![allow(dead_code, unsafe_code, clippy::missing_safety_doc)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use libloading::Library;
use parking_lot::{Mutex, MutexGuard};
use vllm_profiler_cupti::layout::{
    kind, Activity, ActivityApi, ActivityExternalCorrelation, ActivityKernel9, BufferCompletedFn,
    BufferRequestedFn, SubscriberCallbackFn, TimestampFn,
};

type Get32 = unsafe extern "C" fn(*mut u32) -> u32;
type Get64 = unsafe extern "C" fn(*mut u64) -> u32;
type KindFn = unsafe extern "C" fn(u32) -> u32;
type NextFn = unsafe extern "C" fn(*mut u8, usize, *mut *mut Activity) -> u32;
type DroppedFn = unsafe extern "C" fn(*mut c_void, u32, *mut usize) -> u32;
type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u64,
    *const u32,
    *const u32,
    u16,
    u32,
    u32,
) -> u32;
type GraphFn = unsafe extern "C" fn(*const c_char, u32, u32, u64, u32) -> u32;

/// The loaded library's functions.
pub struct Fake {
    pub get_version: Get32,
    pub result_string: unsafe extern "C" fn(u32, *mut *const c_char) -> u32,
    pub subscribe:
        unsafe extern "C" fn(*mut *mut c_void, Option<SubscriberCallbackFn>, *mut c_void) -> u32,
    pub unsubscribe: unsafe extern "C" fn(*mut c_void) -> u32,
    pub register: unsafe extern "C" fn(Option<BufferRequestedFn>, Option<BufferCompletedFn>) -> u32,
    pub register_timestamp: unsafe extern "C" fn(Option<TimestampFn>) -> u32,
    pub timestamp: Get64,
    pub enable: KindFn,
    pub disable: KindFn,
    pub flush_all: KindFn,
    pub next_record: NextFn,
    pub dropped: DroppedFn,
    pub push: unsafe extern "C" fn(u32, u64) -> u32,
    pub pop: unsafe extern "C" fn(u32, *mut u64) -> u32,
    pub launch_raw: LaunchFn,
    pub launch_graph_raw: GraphFn,
    pub records_written: unsafe extern "C" fn() -> u64,
    pub external_depth: unsafe extern "C" fn(u32) -> u32,
}

fn library_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps directory");
    [
        deps.join("libfake_cupti.so"),
        deps.join("../libfake_cupti.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("libfake_cupti.so beside the test executable (cargo test -p fake-cupti)")
}

/// Held while the script is put in the environment and a copy is loaded (its constructor
/// reads the script).
static LOADING: Mutex<()> = Mutex::new(());
/// Tests of one binary run one at a time: the pool and the callbacks are global.
static SERIAL: Mutex<()> = Mutex::new(());
static COPIES: AtomicUsize = AtomicUsize::new(0);

/// Loads a fresh copy of the library with `script` (None: unset) as `FAKE_CUPTI_SCRIPT`.
/// Never unloaded: its name strings must outlive every record read.
pub fn open(script: Option<&str>) -> &'static Library {
    let _loading = LOADING.lock();
    let copy = std::env::temp_dir().join(format!(
        "libfake_cupti-{}-{}.so",
        std::process::id(),
        COPIES.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::copy(library_path(), &copy).expect("copy the library");
    match script {
        Some(script) => std::env::set_var("FAKE_CUPTI_SCRIPT", script),
        None => std::env::remove_var("FAKE_CUPTI_SCRIPT"),
    }
    // SAFETY: our own library; its constructor only reads the script.
    let lib = unsafe { Library::new(&copy) }.expect("load the fake");
    let _ = std::fs::remove_file(&copy);
    Box::leak(Box::new(lib))
}

/// Whether `dlsym` finds `name` in `lib`.
pub fn has(lib: &Library, name: &str) -> bool {
    let symbol = CString::new(name).unwrap();
    // SAFETY: only looked up, never called.
    unsafe { lib.get::<*const c_void>(symbol.as_bytes_with_nul()) }.is_ok()
}

/// A fresh copy (see [`open`]) with every function resolved.
pub fn load(script: Option<&str>) -> Fake {
    let lib = open(script);
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the export has the type of the field it fills.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.expect($name)
        };
    }
    Fake {
        get_version: sym!("cuptiGetVersion"),
        result_string: sym!("cuptiGetResultString"),
        subscribe: sym!("cuptiSubscribe"),
        unsubscribe: sym!("cuptiUnsubscribe"),
        register: sym!("cuptiActivityRegisterCallbacks"),
        register_timestamp: sym!("cuptiActivityRegisterTimestampCallback"),
        timestamp: sym!("cuptiGetTimestamp"),
        enable: sym!("cuptiActivityEnable"),
        disable: sym!("cuptiActivityDisable"),
        flush_all: sym!("cuptiActivityFlushAll"),
        next_record: sym!("cuptiActivityGetNextRecord"),
        dropped: sym!("cuptiActivityGetNumDroppedRecords"),
        push: sym!("cuptiActivityPushExternalCorrelationId"),
        pop: sym!("cuptiActivityPopExternalCorrelationId"),
        launch_raw: sym!("fake_cupti_launch"),
        launch_graph_raw: sym!("fake_cupti_launch_graph"),
        records_written: sym!("fake_cupti_records_written"),
        external_depth: sym!("fake_cupti_external_depth"),
    }
}

/// What a launch gives the kernel record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    pub device: u32,
    pub stream: u32,
    pub duration_ns: u64,
    pub grid: Option<[u32; 3]>,
    pub block: Option<[u32; 3]>,
    pub registers: u16,
    pub static_shared: u32,
    pub dynamic_shared: u32,
}

impl Fake {
    /// Loads nothing more: registers the pool's callbacks and routes BufferCompleted's reads
    /// to this copy.
    pub fn register_pool(&self) -> u32 {
        *NEXT.lock() = Some((self.next_record, self.dropped));
        // SAFETY: the pool's callbacks have CUPTI's types.
        unsafe { (self.register)(Some(requested), Some(completed)) }
    }

    pub fn enable_all(&self, kinds: &[u32]) {
        for &k in kinds {
            // SAFETY: plain call.
            assert_eq!(unsafe { (self.enable)(k) }, 0, "enable {k}");
        }
    }

    pub fn launch(&self, name: &str, l: Launch) -> u32 {
        let name = CString::new(name).unwrap();
        let grid = l.grid.as_ref().map_or(std::ptr::null(), |g| g.as_ptr());
        let block = l.block.as_ref().map_or(std::ptr::null(), |b| b.as_ptr());
        // SAFETY: a C string and three-u32 arrays (or NULL), alive for the call.
        unsafe {
            (self.launch_raw)(
                name.as_ptr(),
                l.device,
                l.stream,
                l.duration_ns,
                grid,
                block,
                l.registers,
                l.static_shared,
                l.dynamic_shared,
            )
        }
    }

    pub fn launch_graph(&self, name: &str, device: u32, stream: u32, ns: u64, count: u32) -> u32 {
        let name = CString::new(name).unwrap();
        // SAFETY: a C string alive for the call.
        unsafe { (self.launch_graph_raw)(name.as_ptr(), device, stream, ns, count) }
    }

    pub fn flush(&self, flags: u32) -> u32 {
        // SAFETY: plain call; BufferCompleted runs on this thread.
        unsafe { (self.flush_all)(flags) }
    }

    pub fn take_dropped(&self) -> usize {
        let mut n = usize::MAX;
        // SAFETY: a pointer to our local.
        let status = unsafe { (self.dropped)(std::ptr::null_mut(), 0, &mut n) };
        assert_eq!(status, 0);
        n
    }

    pub fn push(&self, external_kind: u32, id: u64) {
        // SAFETY: plain call.
        assert_eq!(unsafe { (self.push)(external_kind, id) }, 0);
    }

    pub fn pop(&self, external_kind: u32) -> Result<u64, u32> {
        let mut id = 0;
        // SAFETY: a pointer to our local.
        match unsafe { (self.pop)(external_kind, &mut id) } {
            0 => Ok(id),
            code => Err(code),
        }
    }

    pub fn written(&self) -> u64 {
        // SAFETY: plain call.
        unsafe { (self.records_written)() }
    }

    pub fn version(&self) -> Result<u32, u32> {
        let mut v = 0;
        // SAFETY: a pointer to our local.
        match unsafe { (self.get_version)(&mut v) } {
            0 => Ok(v),
            code => Err(code),
        }
    }
}

/// A record read back.
#[derive(Debug, Clone)]
pub enum Rec {
    Kernel(ActivityKernel9, String),
    Api(ActivityApi),
    Ext(ActivityExternalCorrelation),
    Other(u32),
}

/// A buffer BufferCompleted got.
#[derive(Debug)]
pub struct Delivered {
    pub ptr: usize,
    pub size: usize,
    pub valid: usize,
    pub records: Vec<Rec>,
    /// What GetNextRecord ended with (12 at a clean end).
    pub end: u32,
    /// What GetNumDroppedRecords said from inside the callback.
    pub dropped: usize,
}

/// How the pool answers the next BufferRequested calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Null,
    Misaligned,
    TooSmall,
}

pub struct Pool {
    pub buffer_size: usize,
    /// Refusals for the next requests, first first.
    pub refusals: Vec<Refusal>,
    pub requests: usize,
    /// Buffers lent and not yet back, by address.
    pub lent: BTreeMap<usize, Box<[u64]>>,
    pub delivered: Vec<Delivered>,
    /// Read the dropped count inside BufferCompleted (it resets the count).
    pub read_dropped_in_callback: bool,
}

// SAFETY: the records' pointers are the library's kernel names (never freed, never written)
// and null; the pool is only reached under its lock.
unsafe impl Send for Pool {}

pub static POOL: Mutex<Pool> = Mutex::new(Pool {
    buffer_size: 64 * 1024,
    refusals: Vec::new(),
    requests: 0,
    lent: BTreeMap::new(),
    delivered: Vec::new(),
    read_dropped_in_callback: false,
});
static NEXT: Mutex<Option<(NextFn, DroppedFn)>> = Mutex::new(None);
/// Memory handed out with refused buffers, kept so that the addresses stay unique.
static REFUSED: Mutex<Vec<Box<[u64]>>> = Mutex::new(Vec::new());

/// Starts a test: one at a time, the pool emptied and set to `buffer_size`.
pub fn begin(buffer_size: usize) -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock();
    let mut pool = POOL.lock();
    pool.buffer_size = buffer_size;
    pool.refusals.clear();
    pool.requests = 0;
    pool.lent.clear();
    pool.delivered.clear();
    pool.read_dropped_in_callback = false;
    guard
}

unsafe extern "C" fn requested(buffer: *mut *mut u8, size: *mut usize, max: *mut usize) {
    let mut pool = POOL.lock();
    pool.requests += 1;
    let words = pool.buffer_size.div_ceil(8);
    let mut memory = vec![0u64; words + 1].into_boxed_slice();
    let base = memory.as_mut_ptr().cast::<u8>();
    let (ptr, len) = match (!pool.refusals.is_empty()).then(|| pool.refusals.remove(0)) {
        None => (base, pool.buffer_size),
        Some(Refusal::Null) => (std::ptr::null_mut(), pool.buffer_size),
        // SAFETY: 4 bytes into our own allocation.
        Some(Refusal::Misaligned) => (unsafe { base.add(4) }, pool.buffer_size),
        Some(Refusal::TooSmall) => (base, size_of::<ActivityKernel9>() - 8),
    };
    if ptr == base && len == pool.buffer_size {
        pool.lent.insert(ptr as usize, memory);
    } else {
        REFUSED.lock().push(memory);
    }
    // SAFETY: CUPTI's out-pointers.
    unsafe {
        *buffer = ptr;
        *size = len;
        *max = 0;
    }
}

/// Reads the records of a buffer with the library's GetNextRecord.
pub fn read_records(next: NextFn, buffer: *mut u8, valid: usize) -> (Vec<Rec>, u32) {
    let mut records = Vec::new();
    let mut record: *mut Activity = std::ptr::null_mut();
    loop {
        // SAFETY: the buffer holds `valid` bytes of records.
        let status = unsafe { next(buffer, valid, &mut record) };
        if status != 0 {
            return (records, status);
        }
        // SAFETY: GetNextRecord returned a whole record of its kind inside the buffer.
        let rec = unsafe {
            match (*record).kind {
                kind::KERNEL | kind::CONCURRENT_KERNEL => {
                    let k = record.cast::<ActivityKernel9>().read();
                    let name = if k.name.is_null() {
                        "<null>".to_owned()
                    } else {
                        CStr::from_ptr(k.name).to_string_lossy().into_owned()
                    };
                    Rec::Kernel(k, name)
                }
                kind::RUNTIME | kind::DRIVER => Rec::Api(record.cast::<ActivityApi>().read()),
                kind::EXTERNAL_CORRELATION => {
                    Rec::Ext(record.cast::<ActivityExternalCorrelation>().read())
                }
                other => Rec::Other(other),
            }
        };
        records.push(rec);
    }
}

unsafe extern "C" fn completed(
    context: *mut c_void,
    stream: u32,
    buffer: *mut u8,
    size: usize,
    valid: usize,
) {
    assert!(context.is_null() && stream == 0);
    let (next, dropped_fn) = NEXT.lock().expect("registered through register_pool");
    // Calls back into the library from inside its callback, as the tracer does.
    let (records, end) = read_records(next, buffer, valid);
    let mut dropped = 0;
    if POOL.lock().read_dropped_in_callback {
        // SAFETY: a pointer to our local.
        let status = unsafe { dropped_fn(std::ptr::null_mut(), 0, &mut dropped) };
        assert_eq!(status, 0);
    }
    let mut pool = POOL.lock();
    assert!(
        pool.lent.remove(&(buffer as usize)).is_some(),
        "a buffer we lent"
    );
    pool.delivered.push(Delivered {
        ptr: buffer as usize,
        size,
        valid,
        records,
        end,
        dropped,
    });
}

/// The delivered buffers since the last call.
pub fn take_delivered() -> Vec<Delivered> {
    std::mem::take(&mut POOL.lock().delivered)
}

/// All records of `buffers`, in order.
pub fn all_records(buffers: &[Delivered]) -> Vec<Rec> {
    buffers.iter().flat_map(|b| b.records.clone()).collect()
}

pub fn kernels(records: &[Rec]) -> Vec<(ActivityKernel9, String)> {
    records
        .iter()
        .filter_map(|r| match r {
            Rec::Kernel(k, name) => Some((*k, name.clone())),
            _ => None,
        })
        .collect()
}
