//! What every call and every sequence is held to, and the counts that the checks need: calls
//! made, steps and spans begun.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi;

pub(crate) const E_NOT_ENABLED: i32 = -1;
const E_INTERNAL: i32 = -9;
/// Every code the header documents: OK, then E_NOT_ENABLED (-1) to E_INTERNAL (-9).
const DOCUMENTED: std::ops::RangeInclusive<i32> = -9..=0;

/// C ABI calls made so far in this process (the fuzzing figure).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Steps and spans begun (a non-zero handle came back) in this process.
static BEGUN: AtomicU64 = AtomicU64::new(0);
/// Calls made so far in this process.
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

pub(crate) fn counted<T>(value: T) -> T {
    let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_multiple_of(1_000_000) {
        eprintln!("abi-fuzz: {n} C ABI calls");
    }
    value
}

/// A step or span was begun (a non-zero handle came back).
pub(crate) fn note_begun() {
    BEGUN.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn check_code(call: &str, code: i32) -> i32 {
    assert!(DOCUMENTED.contains(&code), "{call} returned {code}");
    assert_ne!(code, E_INTERNAL, "{call}: {}", last_error());
    code
}

/// The thread's last error, checked to be UTF-8.
pub(crate) fn last_error() -> String {
    let mut buf = vec![0u8; 512];
    let n = counted(abi::vllm_profiler_last_error(&mut buf));
    assert!(n >= 0, "last_error returned {n}");
    let n = (n as usize).min(buf.len() - 1);
    String::from_utf8(buf[..n].to_vec()).expect("the last error is UTF-8")
}

/// Checks a JSON call's result: a length that fit names that many bytes of valid JSON.
pub(crate) fn check_json(call: &str, got: i64, buf: &[u8]) {
    if got < 0 {
        check_code(call, i32::try_from(got).expect("an error code"));
        return;
    }
    let got = got as usize;
    if got < buf.len() {
        assert_eq!(buf[got], 0, "{call}: not NUL-terminated");
        serde_json::from_slice::<serde_json::Value>(&buf[..got])
            .unwrap_or_else(|e| panic!("{call}: invalid JSON: {e}"));
    }
}

/// Every step and span begun is accounted for: kept, lost, or unfinished.
pub(crate) fn check_conservation() {
    let mut buf = vec![0u8; 1 << 16];
    let got = loop {
        let got = counted(abi::vllm_profiler_summary_json(0, &mut buf));
        if got < 0 || (got as usize) < buf.len() {
            break got;
        }
        buf.resize(got as usize * 2, 0);
    };
    if got < 0 {
        // No session yet: nothing was ever begun.
        assert_eq!(BEGUN.load(Ordering::Relaxed), 0, "{}", last_error());
        return;
    }
    let summary: vllm_profiler_format::PerformanceSummary =
        serde_json::from_slice(&buf[..got as usize]).expect("the summary parses");
    let c = &summary.counters;
    let accounted = summary.total_steps
        + summary.empty_steps
        + c.total_spans
        + c.lost_events
        + c.unfinished_steps
        + c.unfinished_spans;
    assert_eq!(
        accounted,
        BEGUN.load(Ordering::Relaxed),
        "steps and spans begun vs accounted: {summary:?}"
    );
}
