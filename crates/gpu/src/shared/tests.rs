//! The shared sampler, two backends in one process (two open lock files lock like two
//! processes).
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vllm_profiler_format::ProcessMemory;

use super::*;
use vllm_profiler_format::shared_frame::HEADER_TAG;

/// A backend with one device that counts its reads and lists this process with 300 MiB
/// and another with 5.
struct Counting {
    devices: Vec<GpuDevice>,
    reads: Arc<AtomicU32>,
}

fn counting(uuid: Option<&str>) -> (Box<dyn DeviceBackend>, Arc<AtomicU32>) {
    let reads = Arc::new(AtomicU32::new(0));
    let backend = Counting {
        devices: vec![GpuDevice {
            index: 3,
            uuid: uuid.map(str::to_owned),
            gpu_type: "nvidia".to_owned(),
            ..GpuDevice::default()
        }],
        reads: reads.clone(),
    };
    (Box::new(backend), reads)
}

impl DeviceBackend for Counting {
    fn detector_name(&self) -> &'static str {
        "NVMLDetector"
    }
    fn devices(&self) -> &[GpuDevice] {
        &self.devices
    }
    fn read_device(&mut self, _position: usize, timestamp: f64) -> DeviceReading {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let processes = vec![
            ProcessMemory {
                pid: std::process::id(),
                used_memory_mb: Some(300.0),
            },
            ProcessMemory {
                pid: 1,
                used_memory_mb: Some(5.0),
            },
        ];
        DeviceReading {
            sample: GpuSample {
                timestamp,
                device_id: 3,
                gpu_utilization: Some(f64::from(n)),
                process_memory_used_mb: Some(300.0),
                ..GpuSample::default()
            },
            processes: Some(processes),
        }
    }
}

/// The interval the backends are made with (their ticks' gaps then count).
const INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn tick(backend: &mut SharedBackend, timestamp: f64) -> Vec<GpuSample> {
    let mut out = Vec::new();
    backend.sample(timestamp, &mut out);
    out
}

/// Two backends of device `uuid` sharing a new dir, with their read counters. Two open lock
/// files lock like two processes, even in one process.
fn two_backends(uuid: &str) -> (tempfile::TempDir, [(SharedBackend, Arc<AtomicU32>); 2]) {
    let dir = tempfile::tempdir().unwrap();
    let backends = [0, 1].map(|_| {
        let (inner, reads) = counting(Some(uuid));
        let backend = SharedBackend::new(inner, dir.path(), INTERVAL)
            .ok()
            .unwrap();
        (backend, reads)
    });
    (dir, backends)
}

#[test]
fn one_backend_reads_the_device_and_the_other_takes_its_samples_then_takes_over() {
    let now = unix_now();
    let (dir, [(mut a, reads_a), (mut b, reads_b)]) = two_backends("GPU-aa/../bb");

    let first = tick(&mut a, now);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].gpu_utilization, Some(1.0));
    assert!(a.is_sampler(0));

    let shared = tick(&mut b, now + 0.5);
    assert!(!b.is_sampler(0));
    assert_eq!(
        reads_b.load(Ordering::SeqCst),
        0,
        "b never reads the device"
    );
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].gpu_utilization, Some(1.0));
    assert_eq!(
        shared[0].timestamp, now,
        "the sampler's time, not the reader's"
    );
    // Its own memory comes from the list: this test's pid holds 300 MiB.
    assert_eq!(shared[0].process_memory_used_mb, Some(300.0));
    assert!(tick(&mut b, now + 0.6).is_empty(), "a sample is taken once");

    tick(&mut a, now + 1.0);
    assert_eq!(tick(&mut b, now + 1.1)[0].gpu_utilization, Some(2.0));
    assert_eq!(reads_a.load(Ordering::SeqCst), 2);

    drop(a);
    let own = tick(&mut b, now + 2.0);
    assert!(b.is_sampler(0), "b takes over once a is gone");
    assert_eq!(reads_b.load(Ordering::SeqCst), 1);
    assert_eq!(own[0].gpu_utilization, Some(1.0));
    // The device's files have one safe name inside the dir.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "nvmldetector-GPU-aa_.._bb.json",
            "nvmldetector-GPU-aa_.._bb.lock"
        ]
    );
}

/// A backend that holds device `uuid`'s lock and has published one sample taken at `now`.
fn publishing(dir: &Path, uuid: &str, now: f64) -> SharedBackend {
    let (inner, _) = counting(Some(uuid));
    let mut holder = SharedBackend::new(inner, dir, INTERVAL).ok().unwrap();
    tick(&mut holder, now);
    holder
}

#[test]
fn a_sample_left_by_a_process_that_is_gone_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let _holder = publishing(dir.path(), "GPU-1", now);
    let path = dir.path().join("nvmldetector-GPU-1.json");
    let bytes = fs::read(&path).unwrap();
    let payload = framed_payload(&bytes).unwrap().unwrap();
    let mut left: SharedDeviceSample = serde_json::from_slice(payload).unwrap();
    // A pid no process can have (above the kernel's pid_max limit of 2^22).
    left.sampler_pid = 1 << 30;
    left.sequence = 99;
    let mut framed = Vec::new();
    frame_payload(&serde_json::to_vec(&left).unwrap(), &mut framed);
    fs::write(&path, framed).unwrap();
    let (reader_inner, reads) = counting(Some("GPU-1"));
    let mut reader = SharedBackend::new(reader_inner, dir.path(), INTERVAL)
        .ok()
        .unwrap();
    assert!(tick(&mut reader, now + 0.1).is_empty());
    assert_eq!(reads.load(Ordering::SeqCst), 0);
}

#[test]
fn a_header_announcing_more_than_the_file_holds_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let _holder = publishing(dir.path(), "GPU-3", now);
    let path = dir.path().join("nvmldetector-GPU-3.json");
    let (reader_inner, _) = counting(Some("GPU-3"));
    let mut reader = SharedBackend::new(reader_inner, dir.path(), INTERVAL)
        .ok()
        .unwrap();
    for announced in [
        MAX_SHARED_FILE_BYTES,     // within the cap, but the file is 40 bytes
        MAX_SHARED_FILE_BYTES + 1, // over the cap
        usize::MAX - 100,          // would overflow
    ] {
        fs::write(&path, format!("{HEADER_TAG} {announced} 0\n{{}}")).unwrap();
        assert!(tick(&mut reader, now + 0.1).is_empty());
        assert_eq!(reader.read_buf.len(), 4096, "announced {announced}");
    }
}

#[test]
fn a_sample_older_than_the_start_is_not_taken_and_its_holder_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (holder_inner, _) = counting(Some("GPU-2"));
    let mut holder = SharedBackend::new(holder_inner, dir.path(), INTERVAL)
        .ok()
        .unwrap();
    tick(&mut holder, unix_now() - 60.0);
    let (reader_inner, reads) = counting(Some("GPU-2"));
    let mut reader = SharedBackend::new(reader_inner, dir.path(), INTERVAL)
        .ok()
        .unwrap();
    // The holder's newest sample is a minute old: stale. The reader samples the device.
    let now = unix_now();
    let samples = tick(&mut reader, now);
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].timestamp, now, "its own sample, not the old one");
}

#[test]
fn a_device_without_uuid_is_sampled_by_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let (inner_a, reads_a) = counting(None);
    let (inner_b, reads_b) = counting(None);
    let mut a = SharedBackend::new(inner_a, dir.path(), INTERVAL)
        .ok()
        .unwrap();
    let mut b = SharedBackend::new(inner_b, dir.path(), INTERVAL)
        .ok()
        .unwrap();
    assert_eq!(tick(&mut a, 1.0).len(), 1);
    assert_eq!(tick(&mut b, 1.0).len(), 1);
    assert_eq!(
        (
            reads_a.load(Ordering::SeqCst),
            reads_b.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_unsafe_runtime_dir_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let err = prepare_runtime_dir(&open).unwrap_err();
    assert!(err.contains("writable by other users"), "{err}");

    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
    let err = prepare_runtime_dir(&link).unwrap_err();
    assert!(err.contains("not a directory"), "{err}");

    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(prepare_runtime_dir(&file.join("sub")).is_err());

    let (inner, _) = counting(Some("GPU-3"));
    let Err((_, why)) = SharedBackend::new(inner, &open, INTERVAL) else {
        panic!("an open dir must be refused");
    };
    assert!(why.contains("writable by other users"), "{why}");

    let fresh = tmp.path().join("a/b");
    prepare_runtime_dir(&fresh).unwrap();
    let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn file_stems_keep_only_safe_characters() {
    assert_eq!(
        file_stem("NVMLDetector", "GPU-1234-abcd").as_deref(),
        Some("nvmldetector-GPU-1234-abcd")
    );
    assert_eq!(
        file_stem("AMDSMIDetector", "../x y").as_deref(),
        Some("amdsmidetector-_x_y")
    );
    assert_eq!(file_stem("NVMLDetector", ".."), None);
    assert_eq!(file_stem("NVMLDetector", ""), None);
}

#[test]
fn a_stopped_holder_is_taken_over_and_yields_once_it_runs_again() {
    let now = unix_now();
    let (_dir, [(mut a, reads_a), (mut b, reads_b)]) = two_backends("GPU-stop");
    // b passes for another process (pid 1 lives), so that a can tell b's samples from its own.
    b.pid = 1;
    // Both sample every 0.1 s; a holds the lock.
    for k in 0..3 {
        let t = now + 0.1 * f64::from(k);
        tick(&mut a, t);
        tick(&mut b, t + 0.01);
    }
    assert!(a.is_sampler(0) && !b.is_sampler(0));
    // a stops (SIGSTOP: it ticks no more, and keeps its lock). b waits out three intervals,
    // and at least MIN_STALE_S, then samples the device itself.
    let stopped_at = now + 0.2;
    let mut t = stopped_at;
    while !b.is_sampler(0) {
        t += 0.1;
        assert!(tick(&mut b, t).len() <= 1);
        assert!(t < stopped_at + 2.0, "b never took over");
    }
    assert!(
        t - stopped_at > MIN_STALE_S,
        "taken over after {}",
        t - stopped_at
    );
    assert!(
        t - stopped_at <= MIN_STALE_S + 0.2,
        "taken over after {}",
        t - stopped_at
    );
    let own = tick(&mut b, t + 0.1);
    assert_eq!(reads_b.load(Ordering::SeqCst), 2, "{own:?}");
    // a runs again: it sees b's newer generation and yields before writing; it takes b's
    // samples, and b gets the lock.
    let reads_before = reads_a.load(Ordering::SeqCst);
    let taken = tick(&mut a, t + 0.15);
    assert!(!a.is_sampler(0), "a yields");
    assert_eq!(
        reads_a.load(Ordering::SeqCst),
        reads_before,
        "a read nothing"
    );
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].gpu_utilization, Some(2.0), "b's second read");
    tick(&mut b, t + 0.2);
    assert!(b.is_sampler(0));
    assert!(
        matches!(b.devices[0].lock, Lock::Held(_)),
        "b holds the lock now"
    );
    tick(&mut a, t + 0.25);
    assert!(!a.is_sampler(0), "and a stays a reader");
}
