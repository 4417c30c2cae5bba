//! FAKE_CUPTI_SCRIPT: inline and from a file, each field, and a bad script.
#![allow(unsafe_code)]

mod common;

use std::ptr::null_mut;

use common::{begin, has, load, open, Launch};
use vllm_profiler_cupti::layout::{kind, FLUSH_FORCED};

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fake-cupti-{}-{name}", std::process::id()))
}

#[test]
fn defaults_without_a_script() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    assert_eq!(fake.version(), Ok(24));
    let mut handle = null_mut();
    // SAFETY: a pointer to our local.
    let status = unsafe { (fake.subscribe)(&mut handle, None, null_mut()) };
    assert_eq!(status, 0);
}

#[test]
fn version_inline_and_from_a_file() {
    let _serial = begin(64 * 1024);
    assert_eq!(load(Some(r#"{"version": 28}"#)).version(), Ok(28));
    let path = temp_path("version.json");
    std::fs::write(&path, r#"{"version": 130001}"#).unwrap();
    assert_eq!(load(Some(path.to_str().unwrap())).version(), Ok(130_001));
    let _ = std::fs::remove_file(path);
}

#[test]
fn subscribe_error_is_another_cupti_user() {
    let _serial = begin(64 * 1024);
    let fake = load(Some(r#"{"subscribe_error": 39}"#));
    let mut handle = null_mut();
    // SAFETY: a pointer to our local.
    let status = unsafe { (fake.subscribe)(&mut handle, None, null_mut()) };
    assert_eq!(status, 39);
    assert!(handle.is_null());
    // The Activity API still answers.
    // SAFETY: plain call.
    assert_eq!(unsafe { (fake.enable)(kind::RUNTIME) }, 0);
}

#[test]
fn enable_errors_by_kind_name() {
    let _serial = begin(64 * 1024);
    let fake = load(Some(
        r#"{"enable_errors": {"CONCURRENT_KERNEL": 27, "EXTERNAL_CORRELATION": 14}}"#,
    ));
    // SAFETY: plain calls.
    unsafe {
        assert_eq!((fake.enable)(kind::CONCURRENT_KERNEL), 27);
        assert_eq!((fake.enable)(kind::EXTERNAL_CORRELATION), 14);
        assert_eq!((fake.enable)(kind::RUNTIME), 0);
        assert_eq!((fake.disable)(kind::CONCURRENT_KERNEL), 0);
    }
    fake.register_pool();
    assert_eq!(
        fake.launch("k", Launch::default()),
        0,
        "the kernel kind is not on"
    );
    // SAFETY: plain call.
    assert_eq!(unsafe { (fake.enable)(kind::KERNEL) }, 0);
    assert_eq!(fake.launch("k", Launch::default()), 1);
}

#[test]
fn errors_replace_a_function() {
    let _serial = begin(64 * 1024);
    let fake = load(Some(
        r#"{"errors": {"cuptiActivityFlushAll": 999, "cuptiGetVersion": 15}}"#,
    ));
    assert_eq!(fake.version(), Err(15));
    fake.register_pool();
    fake.enable_all(&[kind::CONCURRENT_KERNEL]);
    fake.launch("k", Launch::default());
    assert_eq!(fake.flush(FLUSH_FORCED), 999);
    assert!(common::take_delivered().is_empty());
    assert_eq!(fake.written(), 1);
}

#[test]
fn omit_symbols_hides_them_from_dlsym() {
    let _serial = begin(64 * 1024);
    let lib = open(Some(
        r#"{"omit_symbols": ["cuptiActivityRegisterTimestampCallback", "cuptiActivityPopExternalCorrelationId"]}"#,
    ));
    assert!(!has(lib, "cuptiActivityRegisterTimestampCallback"));
    assert!(!has(lib, "cuptiActivityPopExternalCorrelationId"));
    assert!(has(lib, "cuptiActivityPushExternalCorrelationId"));
    assert!(has(lib, "fake_cupti_launch"));
    // SAFETY: the export has this type.
    let get_version: unsafe extern "C" fn(*mut u32) -> u32 =
        *unsafe { lib.get(b"cuptiGetVersion\0") }.unwrap();
    let mut version = 0;
    // SAFETY: a pointer to our local.
    assert_eq!(unsafe { get_version(&mut version) }, 0);
    assert_eq!(version, 24);
    // A copy without the script has them all.
    assert!(has(open(None), "cuptiActivityRegisterTimestampCallback"));
}

#[test]
fn a_bad_script_makes_every_function_fail_with_unknown() {
    let _serial = begin(64 * 1024);
    let missing = temp_path("missing.json");
    for script in [
        r#"{"version": 28, "verison": 1}"#,
        r#"{"version": "#,
        r#"{"enable_errors": {"NO_SUCH_KIND": 1}}"#,
        r#"{"errors": {"cuptiNoSuchFunction": 1}}"#,
        missing.to_str().unwrap(),
    ] {
        let fake = load(Some(script));
        assert_eq!(fake.version(), Err(999), "{script}");
        let mut handle = null_mut();
        let mut dropped = 0;
        // SAFETY: pointers to our locals.
        unsafe {
            assert_eq!((fake.subscribe)(&mut handle, None, null_mut()), 999);
            assert_eq!((fake.enable)(kind::CONCURRENT_KERNEL), 999);
            assert_eq!((fake.dropped)(null_mut(), 0, &mut dropped), 999);
            assert_eq!((fake.push)(5, 1), 999);
        }
        assert_eq!(fake.register_pool(), 999);
        assert_eq!(fake.flush(0), 999);
        assert_eq!(fake.launch("k", Launch::default()), 0);
    }
}

#[test]
fn the_call_log_has_a_line_per_call_and_hot_ones_only_when_asked() {
    let _serial = begin(64 * 1024);
    let pid = std::process::id();
    for hot in [false, true] {
        let log = temp_path(&format!("calls-{hot}.log"));
        let _ = std::fs::remove_file(&log);
        let script = format!(
            r#"{{"call_log": "{}", "log_hot": {hot}}}"#,
            log.to_str().unwrap()
        );
        let fake = load(Some(&script));
        fake.version().unwrap();
        fake.register_pool();
        fake.enable_all(&[kind::CONCURRENT_KERNEL]);
        fake.push(5, 1);
        let mut t = 0;
        // SAFETY: a pointer to our local.
        assert_eq!(unsafe { (fake.timestamp)(&mut t) }, 0);
        fake.launch("k", Launch::default());
        fake.pop(5).unwrap();
        assert_eq!(fake.flush(FLUSH_FORCED), 0);
        let text = std::fs::read_to_string(&log).unwrap();
        let mut expected = vec![
            "cuptiGetVersion",
            "cuptiActivityRegisterCallbacks",
            "cuptiActivityEnable",
        ];
        if hot {
            expected.extend([
                "cuptiActivityPushExternalCorrelationId",
                "cuptiGetTimestamp",
                "cuptiActivityPopExternalCorrelationId",
            ]);
        }
        expected.push("cuptiActivityFlushAll");
        if hot {
            // BufferCompleted walks its one record.
            expected.extend(["cuptiActivityGetNextRecord", "cuptiActivityGetNextRecord"]);
        }
        let expected: Vec<String> = expected.iter().map(|f| format!("{pid} {f}")).collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "log_hot {hot}");
        let _ = std::fs::remove_file(&log);
    }
}
