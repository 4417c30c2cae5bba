//! Reads a filled buffer on the tracer's thread: kernel records become `Kernel`s, attributed
//! through the external correlation record their launch produced.
// Records are read through the pointers cuptiActivityGetNextRecord gives.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::CStr;

use rustc_hash::FxHashMap as HashMap;

use crate::layout::{self, Activity, ActivityExternalCorrelation, ActivityKernel9, CuptiResult};
use crate::sink::{Kernel, Sink};

pub type NextRecordFn = unsafe extern "C" fn(*mut u8, usize, *mut *mut Activity) -> CuptiResult;

/// Launches whose correlation is remembered, oldest forgotten first (a kernel's record comes
/// after its launch's, usually within a buffer or two).
pub const MAX_CORRELATIONS: usize = 1 << 16;
/// Distinct kernel names and launch configurations cached; past it the cache starts over.
const MAX_CACHED: usize = 1 << 13;
/// Longest kernel name kept, in bytes (the name table's limit).
pub const MAX_NAME_LEN: usize = 1024;

/// The state kept across buffers.
#[derive(Default)]
pub struct Parser {
    correlations: HashMap<u32, u64>,
    order: VecDeque<u32>,
    /// By the address CUPTI gives every record of one kernel, with the raw bytes to check it.
    names: HashMap<usize, (Box<[u8]>, Option<u32>)>,
    launches: HashMap<[i32; 9], Option<u32>>,
    /// Added to a record's timestamp to put it on the sink's clock.
    pub offset_ns: i128,
    /// Kernel records without device timestamps (the device had no memory to time them).
    pub untimed: u64,
}

impl Parser {
    /// Appends the kernels of `buffer`'s first `valid_size` bytes to `out`.
    ///
    /// # Safety
    /// `buffer` holds `valid_size` bytes of records CUPTI wrote, which `next` steps through.
    pub unsafe fn parse(
        &mut self,
        next: NextRecordFn,
        buffer: *mut u8,
        valid_size: usize,
        sink: &dyn Sink,
        out: &mut Vec<Kernel>,
    ) {
        let mut record: *mut Activity = std::ptr::null_mut();
        // SAFETY: the buffer and size are CUPTI's (this function's contract); the loop ends
        // at the first status other than success.
        while unsafe { next(buffer, valid_size, &mut record) } == layout::SUCCESS {
            if record.is_null() {
                break;
            }
            // SAFETY: a record begins with its kind, and records are 8-aligned.
            let kind = unsafe { (*record).kind };
            match kind {
                layout::kind::CONCURRENT_KERNEL | layout::kind::KERNEL => {
                    // SAFETY: a kernel record of a known API version starts with Kernel9's
                    // 208 bytes (`layout::version_is_known` was checked at start).
                    let kernel = unsafe { std::ptr::read(record.cast::<ActivityKernel9>()) };
                    if let Some(k) = self.kernel(&kernel, sink) {
                        out.push(k);
                    }
                }
                layout::kind::EXTERNAL_CORRELATION => {
                    // SAFETY: a record of this kind is an ActivityExternalCorrelation.
                    let external =
                        unsafe { std::ptr::read(record.cast::<ActivityExternalCorrelation>()) };
                    if external.external_kind == layout::EXTERNAL_KIND_CUSTOM2 {
                        self.remember(external.correlation_id, external.external_id);
                    }
                }
                _ => {}
            }
        }
    }

    fn remember(&mut self, correlation: u32, context: u64) {
        if self.correlations.insert(correlation, context).is_none() {
            self.order.push_back(correlation);
            if self.order.len() > MAX_CORRELATIONS {
                if let Some(old) = self.order.pop_front() {
                    self.correlations.remove(&old);
                }
            }
        }
    }

    fn kernel(&mut self, record: &ActivityKernel9, sink: &dyn Sink) -> Option<Kernel> {
        if record.start == 0 && record.end == 0 {
            self.untimed += 1;
            return None;
        }
        let start = (i128::from(record.start) + self.offset_ns).max(0);
        Some(Kernel {
            context: self
                .correlations
                .get(&record.correlation_id)
                .copied()
                .unwrap_or(0),
            name: self.name(record.name, sink),
            launch: self.launch(record, sink),
            device: record.device_id,
            stream: record.stream_id,
            from_graph: record.graph_id != 0 || record.graph_node_id != 0,
            start_ns: u64::try_from(start).unwrap_or(u64::MAX),
            duration_ns: record.end.saturating_sub(record.start),
        })
    }

    fn name(&mut self, name: *const core::ffi::c_char, sink: &dyn Sink) -> Option<u32> {
        if name.is_null() {
            return sink.intern_name("(unnamed)");
        }
        // SAFETY: a kernel record's name is NULL (checked) or a NUL-terminated string CUPTI
        // owns while the record is read.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        if let Some((raw, id)) = self.names.get(&(name as usize)) {
            if **raw == *bytes {
                return *id;
            }
        }
        let id = sink.intern_name(&readable_name(bytes));
        if self.names.len() >= MAX_CACHED {
            self.names.clear();
        }
        self.names.insert(name as usize, (bytes.into(), id));
        id
    }

    fn launch(&mut self, r: &ActivityKernel9, sink: &dyn Sink) -> Option<u32> {
        let key = [
            r.grid_x,
            r.grid_y,
            r.grid_z,
            r.block_x,
            r.block_y,
            r.block_z,
            i32::from(r.registers_per_thread),
            r.static_shared_memory,
            r.dynamic_shared_memory,
        ];
        if let Some(id) = self.launches.get(&key) {
            return *id;
        }
        let json = format!(
            "{{\"grid\":[{},{},{}],\"block\":[{},{},{}],\"registers_per_thread\":{},\
             \"static_shared_memory_bytes\":{},\"dynamic_shared_memory_bytes\":{}}}",
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7], key[8]
        );
        let id = sink.intern_launch(&json);
        if self.launches.len() >= MAX_CACHED {
            self.launches.clear();
        }
        self.launches.insert(key, id);
        id
    }
}

/// The demangled name (C++ symbols start with `_Z`), or the bytes as they are, cut to
/// `MAX_NAME_LEN` bytes on a character boundary.
pub fn readable_name(bytes: &[u8]) -> String {
    let mut name = if bytes.starts_with(b"_Z") {
        demangled(bytes).unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    if name.is_empty() {
        name.push_str("(unnamed)");
    }
    if name.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// The demangled text, stopped at `MAX_NAME_LEN` bytes: a short symbol of chained
/// back-references can demangle to terabytes, so the writer ends the demangling as soon as
/// the name is long enough. `None` where it does not parse.
fn demangled(bytes: &[u8]) -> Option<String> {
    struct Capped(String);
    impl cpp_demangle::DemangleWrite for Capped {
        fn write_string(&mut self, s: &str) -> std::fmt::Result {
            let room = MAX_NAME_LEN.saturating_sub(self.0.len());
            if s.len() <= room {
                self.0.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.0.push_str(&s[..end]);
            Err(std::fmt::Error)
        }
    }
    let symbol = cpp_demangle::Symbol::new(bytes).ok()?;
    let mut out = Capped(String::new());
    let written = symbol.structured_demangle(&mut out, &Default::default());
    // A demangling cut at the cap is kept; one that failed before it is not.
    (written.is_ok() || out.0.len() >= MAX_NAME_LEN.saturating_sub(4)).then_some(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangled_names_are_demangled_and_long_ones_cut_on_a_character_boundary() {
        assert_eq!(readable_name(b"_Z6kernelPfi"), "kernel(float*, int)");
        assert_eq!(readable_name(b"triton_poi_fused_0"), "triton_poi_fused_0");
        assert_eq!(readable_name(b"_Znot a symbol"), "_Znot a symbol");
        assert_eq!(readable_name(b""), "(unnamed)");
        let long = "é".repeat(600);
        let cut = readable_name(long.as_bytes());
        assert_eq!(cut.len(), 1024);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_symbol_that_demangles_to_terabytes_is_cut_at_once() {
        // Each level doubles the text through back-references: 2^40 bytes in all.
        // Substitutions: 0 = P, 1 = X, 2 = P<X, X>, then one more per level.
        let sub = |i: usize| {
            const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
            let n = i - 1;
            let digits = if n < 36 {
                vec![DIGITS[n]]
            } else {
                vec![DIGITS[n / 36], DIGITS[n % 36]]
            };
            format!("S{}_", String::from_utf8(digits).unwrap())
        };
        let mut symbol = String::from("_Z1f1PI1XS0_E");
        for level in 0..40 {
            symbol.push_str(&format!("S_I{0}{0}E", sub(2 + level)));
        }
        // Uncapped, this runs out of memory (or the test's time) instead of returning.
        let name = readable_name(symbol.as_bytes());
        assert!(!name.starts_with("_Z"), "{name}");
        assert!(name.len() <= MAX_NAME_LEN && name.len() > MAX_NAME_LEN - 8);
    }
}
