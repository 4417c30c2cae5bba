//! The buffer protocol and the records: exact counts read back through GetNextRecord.
#![allow(unsafe_code)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{all_records, begin, kernels, load, take_delivered, Launch, Rec, Refusal, POOL};
use vllm_profiler_cupti::layout::{
    kind, runtime_cbid, ActivityKernel9, EXTERNAL_KIND_CUSTOM2, FLUSH_FORCED,
};

const KERNEL_SIZE: usize = size_of::<ActivityKernel9>();
const KIB64: usize = 64 * 1024;

fn launch_of(i: u32) -> Launch {
    Launch {
        device: i % 2,
        stream: 7 + i % 3,
        duration_ns: 1_000 + u64::from(i),
        grid: Some([i + 1, 2, 3]),
        block: Some([128, 1 + i % 4, 1]),
        registers: (16 + i % 50) as u16,
        static_shared: 1024 * (i % 3),
        dynamic_shared: 4096 + i,
    }
}

#[test]
fn every_launch_comes_back_once_with_its_fields_and_external_id() {
    let _serial = begin(KIB64);
    let fake = load(None);
    assert_eq!(fake.register_pool(), 0);
    fake.enable_all(&[
        kind::CONCURRENT_KERNEL,
        kind::RUNTIME,
        kind::EXTERNAL_CORRELATION,
    ]);
    const N: u32 = 1000;
    let mut returned = Vec::new();
    for i in 0..N {
        fake.push(EXTERNAL_KIND_CUSTOM2, 5_000 + u64::from(i));
        returned.push(fake.launch(&format!("kernel_{}", i % 7), launch_of(i)));
        assert_eq!(fake.pop(EXTERNAL_KIND_CUSTOM2), Ok(5_000 + u64::from(i)));
    }
    assert_eq!(returned, (1..=N).collect::<Vec<_>>());
    assert_eq!(fake.written(), u64::from(N));

    // 272 bytes a launch: 240 launches fill a 64 KiB buffer, so flush 0 gets the full ones.
    assert_eq!(fake.flush(0), 0);
    let full = take_delivered();
    let per_launch = 24 + 40 + KERNEL_SIZE;
    assert_eq!(full.len(), N as usize * per_launch / KIB64);
    for buffer in &full {
        assert_eq!(buffer.size, KIB64);
        assert!(buffer.valid <= KIB64 && KIB64 - buffer.valid < KERNEL_SIZE);
        assert_eq!(buffer.end, 12);
    }
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let rest = take_delivered();
    assert_eq!(rest.len(), 1);
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    assert!(take_delivered().is_empty());
    assert!(POOL.lock().lent.is_empty(), "every buffer came back");
    assert_eq!(POOL.lock().requests, full.len() + 1);

    let records = all_records(&full.into_iter().chain(rest).collect::<Vec<_>>());
    assert_eq!(records.len(), 3 * N as usize);
    let mut names = HashMap::new();
    for (i, launch) in records.chunks(3).enumerate() {
        let i = i as u32;
        let correlation = i + 1;
        let (Rec::Ext(ext), Rec::Api(api), Rec::Kernel(k, name)) =
            (&launch[0], &launch[1], &launch[2])
        else {
            panic!("launch {i}: {launch:?}");
        };
        assert_eq!(ext.kind, kind::EXTERNAL_CORRELATION);
        assert_eq!(ext.external_kind, EXTERNAL_KIND_CUSTOM2);
        assert_eq!(ext.external_id, 5_000 + u64::from(i));
        assert_eq!(ext.correlation_id, correlation);
        assert_eq!(api.kind, kind::RUNTIME);
        assert_eq!(api.cbid, runtime_cbid::LAUNCH_KERNEL_V7000);
        assert_eq!(api.correlation_id, correlation);
        assert_eq!(api.process_id, std::process::id());
        assert!(api.start <= api.end && api.end <= k.start);
        let l = launch_of(i);
        assert_eq!(k.kind, kind::CONCURRENT_KERNEL);
        assert_eq!(name, &format!("kernel_{}", i % 7));
        assert_eq!(k.correlation_id, correlation);
        assert_eq!(
            (k.device_id, k.stream_id, k.context_id),
            (l.device, l.stream, 1)
        );
        assert_eq!(
            [k.grid_x, k.grid_y, k.grid_z],
            l.grid.unwrap().map(|v| v as i32)
        );
        assert_eq!(
            [k.block_x, k.block_y, k.block_z],
            l.block.unwrap().map(|v| v as i32)
        );
        assert_eq!(k.registers_per_thread, l.registers);
        assert_eq!(k.static_shared_memory, l.static_shared as i32);
        assert_eq!(k.dynamic_shared_memory, l.dynamic_shared as i32);
        assert_eq!(k.end - k.start, l.duration_ns);
        assert_eq!(k.completed, k.end);
        assert_eq!(k.grid_id, i64::from(correlation));
        assert_eq!((k.graph_id, k.graph_node_id), (0, 0));
        assert!(k.start > 0);
        // One copy per name, shared by every record of it.
        assert_eq!(
            *names.entry(name.clone()).or_insert(k.name as usize),
            k.name as usize
        );
    }
    assert_eq!(names.len(), 7);
    assert_eq!(fake.take_dropped(), 0);
}

#[test]
fn flush_zero_delivers_full_buffers_only_and_forced_the_partial_one() {
    let _serial = begin(KIB64);
    let fake = load(None);
    fake.register_pool();
    fake.enable_all(&[kind::CONCURRENT_KERNEL]);
    let per_buffer = KIB64 / KERNEL_SIZE; // 315
    for i in 0..3 {
        fake.launch("small", launch_of(i));
    }
    assert_eq!(fake.flush(0), 0);
    assert!(
        take_delivered().is_empty(),
        "a partial buffer waits for a forced flush"
    );
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let partial = take_delivered();
    assert_eq!(partial.len(), 1);
    assert_eq!(partial[0].valid, 3 * KERNEL_SIZE);
    assert_eq!(kernels(&partial[0].records).len(), 3);
    // Nothing left, and an empty current buffer is not handed back.
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    assert!(take_delivered().is_empty());

    for i in 0..per_buffer as u32 + 1 {
        fake.launch("fill", launch_of(i));
    }
    assert_eq!(fake.flush(0), 0);
    let full = take_delivered();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].valid, per_buffer * KERNEL_SIZE);
    assert_eq!(kernels(&full[0].records).len(), per_buffer);
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let last = take_delivered();
    assert_eq!(last.len(), 1);
    assert_eq!(kernels(&last[0].records).len(), 1);
    assert_eq!(POOL.lock().requests, 3);
    assert!(POOL.lock().lent.is_empty());
    assert_eq!(fake.written(), 3 + per_buffer as u64 + 1);
}

#[test]
fn refused_buffers_drop_the_records_that_asked_and_are_never_used() {
    let _serial = begin(KIB64);
    let fake = load(None);
    fake.register_pool();
    fake.enable_all(&[kind::CONCURRENT_KERNEL]);
    POOL.lock().refusals = vec![Refusal::Null, Refusal::Misaligned, Refusal::TooSmall];
    let ids: Vec<u32> = (0..5).map(|i| fake.launch("k", launch_of(i))).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5], "dropped launches still have ids");
    assert_eq!(POOL.lock().requests, 4, "each dropped record asked again");
    assert_eq!(fake.written(), 2);
    assert_eq!(fake.take_dropped(), 3);
    assert_eq!(fake.take_dropped(), 0, "reading resets the count");
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let delivered = take_delivered();
    assert_eq!(delivered.len(), 1);
    let got: Vec<u32> = kernels(&delivered[0].records)
        .iter()
        .map(|(k, _)| k.correlation_id)
        .collect();
    assert_eq!(got, vec![4, 5]);

    // Dropped again, read from inside BufferCompleted (which calls back into the library).
    POOL.lock().refusals = vec![Refusal::Null, Refusal::Null];
    POOL.lock().read_dropped_in_callback = true;
    for i in 0..4 {
        fake.launch("k", launch_of(i));
    }
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let delivered = take_delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].dropped, 2);
    assert_eq!(kernels(&delivered[0].records).len(), 2);
    assert_eq!(fake.take_dropped(), 0);
}

#[test]
fn a_graph_launch_gives_count_kernels_with_one_correlation_id() {
    let _serial = begin(KIB64);
    let fake = load(None);
    fake.register_pool();
    fake.enable_all(&[kind::CONCURRENT_KERNEL, kind::RUNTIME]);
    let first = fake.launch_graph("graph_node", 1, 3, 500, 5);
    let second = fake.launch_graph("graph_node", 1, 3, 500, 2);
    assert_eq!((first, second), (1, 2));
    assert_eq!(fake.written(), 7);
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let records = all_records(&take_delivered());
    let apis: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Rec::Api(a) => Some((a.cbid, a.correlation_id)),
            _ => None,
        })
        .collect();
    let graph = runtime_cbid::GRAPH_LAUNCH_V10000;
    assert_eq!(apis, vec![(graph, 1), (graph, 2)]);
    let ks = kernels(&records);
    assert_eq!(ks.len(), 7);
    let (one, two) = ks.split_at(5);
    for (n, (k, name)) in one.iter().enumerate() {
        assert_eq!(name, "graph_node");
        assert_eq!((k.correlation_id, k.graph_node_id), (1, n as u64 + 1));
        assert_eq!(k.graph_id, one[0].0.graph_id);
        assert_eq!(k.end - k.start, 500);
        if n > 0 {
            assert_eq!(k.start, one[n - 1].0.end, "back to back");
        }
    }
    assert!(one[0].0.graph_id > 0);
    assert!(two.iter().all(|(k, _)| k.correlation_id == 2));
    assert_ne!(two[0].0.graph_id, one[0].0.graph_id);
}

#[test]
fn before_registration_and_after_unsubscribe() {
    let _serial = begin(KIB64);
    let fake = load(None);
    // Enable works without a subscription; no callbacks means no records (and no drops).
    fake.enable_all(&[kind::CONCURRENT_KERNEL]);
    assert_eq!(fake.launch("early", launch_of(0)), 1);
    assert_eq!(fake.written(), 0);
    assert_eq!(fake.take_dropped(), 0);
    assert_eq!(
        fake.flush(FLUSH_FORCED),
        7,
        "FlushAll before RegisterCallbacks"
    );
    // SAFETY: plain calls.
    unsafe {
        assert_eq!((fake.disable)(kind::CONCURRENT_KERNEL), 0);
        assert_eq!(
            fake.launch("off", launch_of(0)),
            0,
            "no kernel kind enabled"
        );
        assert_eq!((fake.enable)(kind::KERNEL), 0);
        assert_eq!((fake.enable)(0), 21);
        assert_eq!((fake.enable)(4000), 21);
    }
    let mut handle = std::ptr::null_mut();
    // SAFETY: a pointer to our local.
    let status = unsafe { (fake.subscribe)(&mut handle, None, std::ptr::null_mut()) };
    assert_eq!(status, 0);
    assert!(!handle.is_null());
    let mut again = std::ptr::null_mut();
    // SAFETY: as above.
    let status = unsafe { (fake.subscribe)(&mut again, None, std::ptr::null_mut()) };
    assert_eq!(status, 39);
    fake.register_pool();
    assert_eq!(fake.launch("serial", launch_of(1)), 2);
    assert_eq!(fake.launch("serial", launch_of(2)), 3);
    // Unsubscribing and disabling everything keeps the buffer; a forced flush returns it.
    // SAFETY: plain calls.
    unsafe {
        assert_eq!((fake.unsubscribe)(handle), 0);
        assert_eq!((fake.unsubscribe)(handle), 1);
        assert_eq!((fake.disable)(kind::KERNEL), 0);
    }
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let ks = kernels(&all_records(&take_delivered()));
    assert_eq!(ks.len(), 2);
    assert!(ks.iter().all(|(k, _)| k.kind == kind::KERNEL));
    // Subscribing works again once given back.
    // SAFETY: a pointer to our local.
    let status = unsafe { (fake.subscribe)(&mut handle, None, std::ptr::null_mut()) };
    assert_eq!(status, 0);
}

#[test]
fn many_threads_write_at_once_and_nothing_is_lost() {
    let _serial = begin(8 * 1024);
    let fake = load(None);
    fake.register_pool();
    fake.enable_all(&[
        kind::CONCURRENT_KERNEL,
        kind::RUNTIME,
        kind::EXTERNAL_CORRELATION,
    ]);
    const THREADS: u64 = 8;
    const EACH: u64 = 400;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let fake = &fake;
            s.spawn(move || {
                for i in 0..EACH {
                    fake.push(EXTERNAL_KIND_CUSTOM2, t * 1_000_000 + i);
                    fake.launch(&format!("thread_{t}"), launch_of(i as u32));
                    fake.pop(EXTERNAL_KIND_CUSTOM2).unwrap();
                }
            });
        }
        // Flushes race the writers.
        for _ in 0..50 {
            assert_eq!(fake.flush(0), 0);
            std::thread::yield_now();
        }
    });
    assert_eq!(fake.flush(FLUSH_FORCED), 0);
    let records = all_records(&take_delivered());
    assert!(POOL.lock().lent.is_empty());
    let total = (THREADS * EACH) as usize;
    let ext: HashMap<u32, u64> = records
        .iter()
        .filter_map(|r| match r {
            Rec::Ext(e) => Some((e.correlation_id, e.external_id)),
            _ => None,
        })
        .collect();
    let ks = kernels(&records);
    assert_eq!(ks.len(), total);
    assert_eq!(ext.len(), total);
    assert_eq!(fake.written(), total as u64);
    let ids: HashSet<u32> = ks.iter().map(|(k, _)| k.correlation_id).collect();
    assert_eq!(ids.len(), total);
    for (k, name) in &ks {
        let t = ext[&k.correlation_id] / 1_000_000;
        assert_eq!(name, &format!("thread_{t}"));
    }
    assert_eq!(fake.take_dropped(), 0);
}
