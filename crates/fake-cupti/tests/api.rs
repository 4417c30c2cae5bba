//! The functions one at a time: GetNextRecord's walk, null pointers, the external id stacks,
//! the clock, kernel names, result strings.
#![allow(unsafe_code)]

mod common;

use std::ffi::{c_char, CStr};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{all_records, begin, kernels, load, read_records, take_delivered, Launch, Rec};
use vllm_profiler_cupti::layout::{
    kind, Activity, ActivityApi, ActivityExternalCorrelation, ActivityKernel9, FLUSH_FORCED,
};

#[test]
fn get_next_record_walks_by_kind_size_and_stops_where_real_cupti_does() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    // kernel (208), API (40), external (24), kernel: 480 bytes, all multiples of 8.
    let mut buffer = vec![0u64; 128];
    let base = buffer.as_mut_ptr().cast::<u8>();
    let kinds = [
        (0, kind::CONCURRENT_KERNEL),
        (208, kind::RUNTIME),
        (248, kind::EXTERNAL_CORRELATION),
        (272, kind::KERNEL),
    ];
    for (offset, k) in kinds {
        // SAFETY: inside our 1 KiB.
        unsafe { base.add(offset).cast::<u32>().write(k) };
    }
    let (records, end) = read_records(fake.next_record, base, 480);
    assert_eq!(end, 12);
    let got: Vec<u32> = records
        .iter()
        .map(|r| match r {
            Rec::Kernel(k, _) => k.kind,
            Rec::Api(a) => a.kind,
            Rec::Ext(e) => e.kind,
            Rec::Other(k) => *k,
        })
        .collect();
    assert_eq!(got, kinds.map(|(_, k)| k));
    assert_eq!(
        size_of::<ActivityApi>() + size_of::<ActivityExternalCorrelation>(),
        64
    );

    // A record crossing valid_size, and an unknown kind, are INVALID_KIND.
    let (records, end) = read_records(fake.next_record, base, 479);
    assert_eq!((records.len(), end), (3, 21));
    // SAFETY: inside our buffer.
    unsafe { base.add(248).cast::<u32>().write(9999) };
    let (records, end) = read_records(fake.next_record, base, 480);
    assert_eq!((records.len(), end), (2, 21));
    // Empty: the end at once.
    let (records, end) = read_records(fake.next_record, base, 0);
    assert_eq!((records.len(), end), (0, 12));

    let mut record: *mut Activity = null_mut();
    // SAFETY: null arguments are what is tested; the library checks them.
    unsafe {
        assert_eq!((fake.next_record)(null_mut(), 480, &mut record), 1);
        assert_eq!((fake.next_record)(base, 480, null_mut()), 1);
        // A record pointer outside the buffer.
        let mut outside = base.add(4096).cast::<Activity>();
        assert_eq!((fake.next_record)(base, 480, &mut outside), 1);
    }
}

#[test]
fn null_out_pointers_are_invalid_parameter() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    // SAFETY: null arguments are what is tested; the library checks them.
    unsafe {
        assert_eq!((fake.get_version)(null_mut()), 1);
        assert_eq!((fake.timestamp)(null_mut()), 1);
        assert_eq!((fake.dropped)(null_mut(), 0, null_mut()), 1);
        assert_eq!((fake.subscribe)(null_mut(), None, null_mut()), 1);
        assert_eq!((fake.result_string)(0, null_mut()), 1);
        assert_eq!((fake.register)(None, None), 1);
        assert_eq!((fake.unsubscribe)(null_mut()), 1);
    }
}

#[test]
fn external_ids_stack_per_thread_and_per_kind() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    assert_eq!(fake.pop(5), Err(18));
    fake.push(5, 10);
    fake.push(5, 11);
    fake.push(3, 30);
    // SAFETY: plain calls.
    unsafe {
        assert_eq!((fake.external_depth)(5), 2);
        assert_eq!((fake.external_depth)(3), 1);
        assert_eq!((fake.external_depth)(4), 0);
        assert_eq!((fake.push)(0, 1), 1, "INVALID is not a kind");
        assert_eq!(
            (fake.push)(6, 1),
            1,
            "past CUPTI_EXTERNAL_CORRELATION_KIND_SIZE"
        );
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain call.
            assert_eq!(unsafe { (fake.external_depth)(5) }, 0);
            assert_eq!(fake.pop(5), Err(18));
        });
    });
    assert_eq!(fake.pop(5), Ok(11));
    // lastId may be NULL, as in CUPTI.
    // SAFETY: plain call.
    assert_eq!(unsafe { (fake.pop)(5, null_mut()) }, 0);
    assert_eq!(fake.pop(5), Err(18));
    assert_eq!(fake.pop(3), Ok(30));

    // Records: one external record per kind with an id pushed, kind ascending.
    fake.register_pool();
    fake.enable_all(&[
        kind::CONCURRENT_KERNEL,
        kind::RUNTIME,
        kind::EXTERNAL_CORRELATION,
    ]);
    fake.push(5, 500);
    fake.push(3, 300);
    fake.launch("two_kinds", Launch::default());
    fake.pop(3).unwrap();
    fake.launch("one_kind", Launch::default());
    fake.pop(5).unwrap();
    fake.launch("no_kind", Launch::default());
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let shape: Vec<String> = all_records(&take_delivered())
        .iter()
        .map(|r| match r {
            Rec::Ext(e) => format!(
                "ext {} {} {}",
                e.external_kind, e.external_id, e.correlation_id
            ),
            Rec::Api(a) => format!("api {}", a.correlation_id),
            Rec::Kernel(k, name) => format!("{name} {}", k.correlation_id),
            Rec::Other(k) => format!("other {k}"),
        })
        .collect();
    let expected = [
        "ext 3 300 1",
        "ext 5 500 1",
        "api 1",
        "two_kinds 1",
        "ext 5 500 2",
        "api 2",
        "one_kind 2",
        "api 3",
        "no_kind 3",
    ];
    assert_eq!(shape, expected);
}

static CLOCK: AtomicU64 = AtomicU64::new(1_000);

unsafe extern "C" fn scripted_clock() -> u64 {
    CLOCK.fetch_add(10, Ordering::SeqCst)
}

#[test]
fn the_timestamp_callback_is_the_clock_of_records_and_get_timestamp() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    let mut t0 = 0;
    let mut t1 = 0;
    // SAFETY: pointers to our locals.
    unsafe {
        assert_eq!((fake.timestamp)(&mut t0), 0);
        assert_eq!((fake.timestamp)(&mut t1), 0);
    }
    assert!(t0 > 0 && t1 >= t0, "CLOCK_MONOTONIC");
    // SAFETY: our callback has the type.
    let status = unsafe { (fake.register_timestamp)(Some(scripted_clock)) };
    assert_eq!(status, 0);
    let mut t = 0;
    // SAFETY: a pointer to our local.
    assert_eq!(unsafe { (fake.timestamp)(&mut t) }, 0);
    assert_eq!(t, 1_000);
    fake.register_pool();
    fake.enable_all(&[kind::CONCURRENT_KERNEL]);
    fake.launch(
        "timed",
        Launch {
            duration_ns: 5,
            ..Launch::default()
        },
    );
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let ks = kernels(&all_records(&take_delivered()));
    assert_eq!((ks[0].0.start, ks[0].0.end), (1_010, 1_015));
    // SAFETY: NULL gives the default clock back.
    assert_eq!(unsafe { (fake.register_timestamp)(None) }, 0);
    // SAFETY: a pointer to our local.
    assert_eq!(unsafe { (fake.timestamp)(&mut t) }, 0);
    assert!(t >= t1);
}

#[test]
fn null_and_non_utf8_names_and_default_dimensions() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    fake.register_pool();
    fake.enable_all(&[kind::CONCURRENT_KERNEL]);
    let odd: &[u8] = b"k\xff\xfe\0";
    // SAFETY: NULL name and dimensions, then a NUL-terminated non-UTF-8 name.
    unsafe {
        assert_eq!(
            (fake.launch_raw)(
                std::ptr::null(),
                0,
                0,
                1,
                std::ptr::null(),
                std::ptr::null(),
                0,
                0,
                0
            ),
            1
        );
        assert_eq!(
            (fake.launch_raw)(
                odd.as_ptr().cast::<c_char>(),
                0,
                0,
                1,
                std::ptr::null(),
                std::ptr::null(),
                0,
                0,
                0
            ),
            2
        );
        assert_eq!((fake.launch_graph_raw)(std::ptr::null(), 0, 0, 1, 1), 3);
    }
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let buffers = take_delivered();
    let ks: Vec<ActivityKernel9> = kernels(&all_records(&buffers))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(ks.len(), 3);
    // SAFETY: the library's names live forever.
    let names: Vec<&[u8]> = ks
        .iter()
        .map(|k| unsafe { CStr::from_ptr(k.name) }.to_bytes())
        .collect();
    assert_eq!(names, [&b"?"[..], &b"k\xff\xfe"[..], &b"?"[..]]);
    assert_eq!(ks[0].name, ks[2].name);
    for k in &ks {
        assert_eq!(
            [k.grid_x, k.grid_y, k.grid_z, k.block_x, k.block_y, k.block_z],
            [1; 6]
        );
    }
}

#[test]
fn result_strings_are_static_enum_names() {
    let _serial = begin(64 * 1024);
    let fake = load(None);
    let name = |code| {
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: a pointer to our local; the string is static.
        let status = unsafe { (fake.result_string)(code, &mut text) };
        // SAFETY: as above.
        (
            status,
            unsafe { CStr::from_ptr(text) }.to_str().unwrap().to_owned(),
        )
    };
    assert_eq!(name(0), (0, "CUPTI_SUCCESS".to_owned()));
    assert_eq!(
        name(39),
        (
            0,
            "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED".to_owned()
        )
    );
    assert_eq!(name(12), (0, "CUPTI_ERROR_MAX_LIMIT_REACHED".to_owned()));
    assert_eq!(name(123_456).0, 1);
}
