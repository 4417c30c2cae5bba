//! Shared by the benches that drive the real `libvllm_profiler.so` through `dlopen`: loading
//! it and its C ABI as plain function pointers, the smoke switch, RSS.
#![allow(unsafe_code)] // it calls the C ABI through `dlopen`ed function pointers
#![allow(dead_code)] // each bench binary uses a different part

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};

/// The C ABI functions the benches call, copied out of the library as function pointers.
/// The library is leaked: it is never unloaded (the agent's threads run its code).
#[derive(Clone, Copy)]
pub struct Abi {
    pub enable: unsafe extern "C" fn(*const c_char) -> i32,
    pub disable: unsafe extern "C" fn() -> i32,
    pub step_begin: unsafe extern "C" fn(u32, u32) -> u64,
    pub step_end: unsafe extern "C" fn(u64) -> i32,
    pub span_begin: unsafe extern "C" fn(*const c_char) -> u64,
    pub span_end: unsafe extern "C" fn(u64) -> i32,
    pub export: unsafe extern "C" fn(*const c_char) -> i32,
    pub summary_json: unsafe extern "C" fn(u32, *mut c_char, usize) -> i64,
}

/// `$VLLM_PROFILER_LIBRARY` when set (a machine without cargo), else the library built now
/// with this bench's profile (`cargo build --release -p vllm-profiler-agent --lib`).
pub fn library_path() -> PathBuf {
    match std::env::var_os("VLLM_PROFILER_LIBRARY") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => vllm_profiler_tests::agent_library().to_path_buf(),
    }
}

/// Loads the agent with `dlopen` and looks its C ABI up. Panics with the reason if it cannot.
pub fn load(path: &Path) -> Abi {
    for key in ["VLLM_ENABLE_PROFILING", "LD_PRELOAD"] {
        assert!(
            std::env::var_os(key).is_none(),
            "unset {key}: the benches enable the agent themselves"
        );
    }
    // SAFETY: loading runs the library's constructor, which only reads the environment
    // (VLLM_ENABLE_PROFILING is unset, checked above, so it starts nothing). The library is
    // leaked, so the function pointers below stay valid for the whole process.
    let lib: &'static libloading::Library = Box::leak(Box::new(unsafe {
        libloading::Library::new(path)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    }));
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol's type is the one crates/agent/include/vllm_profiler.h
            // declares for it; the library outlives the process (leaked above).
            *unsafe { lib.get($name) }.unwrap_or_else(|e| panic!("{e}"))
        };
    }
    Abi {
        enable: sym!(b"vllm_profiler_enable\0"),
        disable: sym!(b"vllm_profiler_disable\0"),
        step_begin: sym!(b"vllm_profiler_step_begin\0"),
        step_end: sym!(b"vllm_profiler_step_end\0"),
        span_begin: sym!(b"vllm_profiler_span_begin\0"),
        span_end: sym!(b"vllm_profiler_span_end\0"),
        export: sym!(b"vllm_profiler_export\0"),
        summary_json: sym!(b"vllm_profiler_summary_json\0"),
    }
}

impl Abi {
    /// `vllm_profiler_enable` with a JSON configuration; panics unless it returns 0.
    pub fn enable_with(&self, config: &serde_json::Value) {
        let json = CString::new(config.to_string()).expect("no NUL in JSON");
        // SAFETY: a valid NUL-terminated string that outlives the call.
        let rc = unsafe { (self.enable)(json.as_ptr()) };
        assert_eq!(rc, 0, "vllm_profiler_enable({config}) failed");
    }

    /// One step pair through the C ABI; returns what step_end returned.
    #[inline(always)]
    pub fn step_pair(&self) -> i32 {
        // SAFETY: step_begin/step_end take plain integers; any value is allowed.
        unsafe { (self.step_end)((self.step_begin)(8, 128)) }
    }

    /// A step with one span inside (the span name is a static C string).
    #[inline(always)]
    pub fn step_with_span(&self, name: &std::ffi::CStr) -> i32 {
        // SAFETY: integers, and a NUL-terminated string that outlives the calls.
        unsafe {
            let step = (self.step_begin)(8, 128);
            let span = (self.span_begin)(name.as_ptr());
            (self.span_end)(span);
            (self.step_end)(step)
        }
    }

    /// The performance summary as parsed JSON. Also drains every thread's ring into the
    /// totals and the history, on this thread: the benches call it between timed batches.
    pub fn summary(&self) -> serde_json::Value {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes.
            let n = unsafe { (self.summary_json)(0, buf.as_mut_ptr().cast(), buf.len()) };
            assert!(n >= 0, "vllm_profiler_summary_json failed: {n}");
            let n = n as usize;
            if n < buf.len() {
                return serde_json::from_slice(&buf[..n]).expect("summary is JSON");
            }
            buf.resize(n + 1, 0);
        }
    }

    /// Drains the rings (a summary with a NULL buffer: nothing is copied).
    pub fn drain(&self) {
        // SAFETY: a NULL buffer of length 0 is allowed ("buf may be NULL").
        let n = unsafe { (self.summary_json)(0, std::ptr::null_mut(), 0) };
        assert!(n >= 0, "vllm_profiler_summary_json failed: {n}");
    }

    /// `vllm_profiler_export(dir)`; returns the number of files written.
    pub fn export_to(&self, dir: &Path) -> i32 {
        use std::os::unix::ffi::OsStrExt;
        let dir = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in the path");
        // SAFETY: a valid NUL-terminated string that outlives the call.
        let n = unsafe { (self.export)(dir.as_ptr()) };
        assert!(n >= 0, "vllm_profiler_export failed: {n}");
        n
    }
}

/// `BENCH_SMOKE=1` (any non-empty value but `0`): the CI mode, every bench in seconds.
pub fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm's second field is the resident page count");
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(1) as u64
}
