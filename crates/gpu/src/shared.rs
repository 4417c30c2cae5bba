//! One sampler per device per host.
//!
//! A vLLM server with tensor parallelism 4 runs five or more profiled processes on the same
//! GPUs. Without coordination each of them would poll the vendor library for every device.
//! `SharedBackend` wraps a backend so that, for each device, one process of the host (of one
//! user) reads the library and the others read its samples:
//!
//! - Each device has a lock file, `<runtime dir>/<detector>-<uuid>.lock`. The process that
//!   holds its `flock` is the device's sampler; the others try again, without blocking, on each
//!   of their ticks. The kernel drops the lock when its holder exits, however it exits (even
//!   `SIGKILL`), so the next tick of another process takes over.
//! - The sampler writes each sample over `<detector>-<uuid>.json` in place: a one-line header
//!   with the length and CRC-32 of the JSON that follows ([`SharedDeviceSample`]: the sample
//!   and every process's memory on the device). A reader that catches a write half done sees
//!   a CRC mismatch and tries again on its next tick. Writing in place costs one `pwrite`; a
//!   new file and a rename per sample cost 100 times more on overlay file systems. The others
//!   keep the file open, take each new sample once, and take their own
//!   `process_memory_used_mb` from the process list.
//! - A device without a UUID, or a runtime dir that cannot be used, is sampled by every
//!   process, as without sharing.
//!
//! A forked child must not keep its parent's locks alive (a `flock` belongs to the open file,
//! which the child shares): [`forget_inherited_locks`] closes them in the child.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use vllm_profiler_core::{process_memory_mb, DeviceBackend, DeviceReading};
use vllm_profiler_format::{GpuDevice, GpuSample, SharedDeviceSample};

/// A shared sample older than this when a process starts sharing is not taken: it is left
/// from an earlier holder, not the current one.
const STALE_AT_START_S: f64 = 5.0;

/// The runtime dir used when none is configured: `$XDG_RUNTIME_DIR/vllm-profiler` (per user,
/// in memory) when set, else `/tmp/vllm-profiler-<uid>`.
pub fn default_runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("vllm-profiler"),
        None => {
            std::env::temp_dir().join(format!("vllm-profiler-{}", nix::unistd::geteuid().as_raw()))
        }
    }
}

/// Creates `dir` (mode 0700) if missing and checks that it is safe to share samples through:
/// a real directory (not a symlink), owned by this user, that nobody else can write to.
pub fn prepare_runtime_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) => return Err(format!("cannot create {shown}: {err}")),
    }
    let meta = fs::symlink_metadata(dir).map_err(|err| format!("cannot stat {shown}: {err}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "{shown} belongs to uid {}, not to this user ({uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} is writable by other users (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Raw descriptors of this process's lock files, so that a forked child can close them. A
/// fixed table of atomics: the fork hook may touch no lock and allocate nothing.
static LOCK_FDS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

fn remember_fd(fd: i32) {
    for slot in &LOCK_FDS {
        if slot
            .compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
    // More than 64 devices sharing at once: the rest stay open in a forked child, which
    // then keeps those locks until it exits. Harmless for correctness of the samples.
}

fn forget_fd(fd: i32) {
    for slot in &LOCK_FDS {
        if slot
            .compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// In a forked child: closes the lock files inherited from the parent, so that the child
/// never keeps the parent's devices locked after the parent exits. Async-signal-safe: atomics
/// and `close` only. The parent's `SharedBackend` is never dropped in the child (its thread
/// does not exist there), so nothing uses these descriptors again.
pub fn forget_inherited_locks() {
    for slot in &LOCK_FDS {
        let fd = slot.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// Whether process `pid` exists: a sample left by a sampler that has exited is not taken (its
/// successor has the lock and is about to replace it).
fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// A device's lock file, held or not.
enum Lock {
    /// This process samples the device.
    Held(Flock<File>),
    /// Another process samples it; the file is kept open to try again cheaply.
    Waiting(File),
    /// Not shared: no UUID, or the lock file could not be used. Sampled here.
    Unshared,
}

impl Lock {
    fn raw_fd(&self) -> Option<i32> {
        match self {
            Lock::Held(file) => Some(file.as_raw_fd()),
            Lock::Waiting(file) => Some(file.as_raw_fd()),
            Lock::Unshared => None,
        }
    }
}

struct SharedDevice {
    lock: Lock,
    /// `<detector>-<uuid>.json`, where the sampler writes and the others read; `None` when
    /// unshared.
    data: Option<File>,
    /// Samples this process published as the device's sampler.
    published: u64,
    /// The newest shared sample taken: (sampler pid, sequence).
    taken: Option<(u32, u64)>,
    /// Its timestamp: an older sample (from an earlier holder) is never taken after it.
    taken_timestamp: f64,
}

/// A backend whose devices are each sampled by one process of the host (see the module
/// comment).
pub struct SharedBackend {
    inner: Box<dyn DeviceBackend>,
    dir: PathBuf,
    pid: u32,
    devices: Vec<SharedDevice>,
    warnings: Vec<String>,
    /// A problem publishing is reported once.
    publish_failed: bool,
    /// Serialised samples, reused.
    write_buf: Vec<u8>,
    read_buf: Vec<u8>,
}

/// First word of a shared sample file's header line: `vprof-shared-v1 <length> <crc32>`.
const HEADER_TAG: &str = "vprof-shared-v1";
/// The largest shared sample file read: one device's sample with a process list of
/// thousands of entries fits many times over.
const MAX_SHARED_FILE_BYTES: usize = 1 << 20;

/// The JSON of a shared sample file, if it is whole: the length and CRC-32 of the header
/// match what follows. `Err(needed)` when `bytes` is too short for the length it announces.
fn framed_payload(bytes: &[u8]) -> Result<Option<&[u8]>, usize> {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let Ok(header) = std::str::from_utf8(&bytes[..end]) else {
        return Ok(None);
    };
    let mut fields = header.split(' ');
    let (Some(HEADER_TAG), Some(len), Some(crc), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Ok(None);
    };
    let (Ok(len), Ok(crc)) = (len.parse::<usize>(), crc.parse::<u32>()) else {
        return Ok(None);
    };
    let start = end + 1;
    let Some(stop) = start.checked_add(len) else {
        return Ok(None);
    };
    if stop > bytes.len() {
        return Err(stop);
    }
    let payload = &bytes[start..stop];
    Ok((crc32fast::hash(payload) == crc).then_some(payload))
}

/// The bytes of a shared sample file holding `json`.
fn frame_payload(json: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = writeln!(out, "{HEADER_TAG} {} {}", json.len(), crc32fast::hash(json));
    out.extend_from_slice(json);
}

/// Keeps letters, digits, `-`, `_` and `.` of a UUID, so that it is one safe file name.
fn file_stem(detector: &str, uuid: &str) -> Option<String> {
    let clean: String = uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    (!clean.is_empty()).then(|| format!("{}-{clean}", detector.to_ascii_lowercase()))
}

/// Opens (creating, mode 0600) a lock or sample file of the runtime dir, never through a
/// symlink.
fn open_shared_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

impl SharedBackend {
    /// Shares `inner`'s devices through `dir` (see [`prepare_runtime_dir`]). `Err` says why
    /// sharing is impossible; the caller then samples with `inner` alone.
    pub fn new(
        inner: Box<dyn DeviceBackend>,
        dir: &Path,
    ) -> Result<SharedBackend, (Box<dyn DeviceBackend>, String)> {
        if let Err(why) = prepare_runtime_dir(dir) {
            return Err((inner, why));
        }
        let started = crate::unix_now();
        let detector = inner.detector_name();
        let mut warnings = Vec::new();
        let devices = inner
            .devices()
            .iter()
            .map(|device| {
                let stem = device
                    .uuid
                    .as_deref()
                    .and_then(|uuid| file_stem(detector, uuid));
                let opened = stem.map(|stem| {
                    let lock = open_shared_file(&dir.join(format!("{stem}.lock")))?;
                    remember_fd(lock.as_raw_fd());
                    match open_shared_file(&dir.join(format!("{stem}.json"))) {
                        Ok(data) => Ok((lock, data)),
                        Err(err) => {
                            forget_fd(lock.as_raw_fd());
                            Err(err)
                        }
                    }
                });
                let (lock, data) = match opened {
                    None => (Lock::Unshared, None),
                    Some(Ok((lock, data))) => (Lock::Waiting(lock), Some(data)),
                    Some(Err(err)) => {
                        warnings.push(format!(
                            "cannot share the samples of GPU {} through {}: {err}; this \
                             process samples it itself",
                            device.index,
                            dir.display()
                        ));
                        (Lock::Unshared, None)
                    }
                };
                SharedDevice {
                    lock,
                    data,
                    published: 0,
                    taken: None,
                    taken_timestamp: started - STALE_AT_START_S,
                }
            })
            .collect();
        Ok(SharedBackend {
            inner,
            dir: dir.to_path_buf(),
            pid: std::process::id(),
            devices,
            warnings,
            publish_failed: false,
            write_buf: Vec::new(),
            read_buf: Vec::new(),
        })
    }

    /// Whether this process samples the device at `position`: it holds its lock (taking it
    /// now if its holder is gone), or the device is not shared.
    fn samples_here(&mut self, position: usize) -> bool {
        let device = &mut self.devices[position];
        match std::mem::replace(&mut device.lock, Lock::Unshared) {
            Lock::Held(file) => {
                device.lock = Lock::Held(file);
                true
            }
            Lock::Unshared => true,
            Lock::Waiting(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => {
                    device.lock = Lock::Held(held);
                    true
                }
                Err((file, Errno::EWOULDBLOCK)) | Err((file, Errno::EINTR)) => {
                    device.lock = Lock::Waiting(file);
                    false
                }
                Err((file, errno)) => {
                    forget_fd(file.as_raw_fd());
                    device.data = None;
                    self.warnings.push(format!(
                        "cannot lock the sampler of GPU {} ({errno}); this process samples \
                         it itself",
                        self.inner.devices()[position].index
                    ));
                    true
                }
            },
        }
    }

    fn publish(&mut self, position: usize, reading: &DeviceReading) {
        let device = &mut self.devices[position];
        let (Lock::Held(_), Some(data)) = (&device.lock, &device.data) else {
            return;
        };
        device.published += 1;
        let shared = SharedDeviceSample {
            sampler_pid: self.pid,
            sequence: device.published,
            sample: reading.sample.clone(),
            processes: reading.processes.clone(),
        };
        let written = serde_json::to_vec(&shared)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                frame_payload(&json, &mut self.write_buf);
                data.write_all_at(&self.write_buf, 0)
            });
        if let Err(err) = written {
            if !self.publish_failed {
                self.publish_failed = true;
                self.warnings.push(format!(
                    "cannot share GPU samples with other processes through {}: {err}",
                    self.dir.display()
                ));
            }
        }
    }

    /// The device's shared sample, if a whole new one came since the last call.
    fn take_shared(&mut self, position: usize) -> Option<GpuSample> {
        let device = &mut self.devices[position];
        let data = device.data.as_ref()?;
        if self.read_buf.len() < 4096 {
            self.read_buf.resize(4096, 0);
        }
        let payload = loop {
            let n = data.read_at(&mut self.read_buf, 0).ok()?;
            match framed_payload(&self.read_buf[..n]) {
                Ok(payload) => break payload?,
                // A long process list: read again with room for all of it, where the file
                // really is that long (another process wrote it: its header is not trusted).
                Err(needed)
                    if needed > self.read_buf.len()
                        && needed <= MAX_SHARED_FILE_BYTES
                        && data.metadata().is_ok_and(|m| m.len() >= needed as u64) =>
                {
                    self.read_buf.resize(needed, 0)
                }
                Err(_) => return None,
            }
        };
        let shared: SharedDeviceSample = serde_json::from_slice(payload).ok()?;
        let id = (shared.sampler_pid, shared.sequence);
        if device.taken == Some(id)
            || shared.sample.timestamp <= device.taken_timestamp
            || !is_alive(shared.sampler_pid)
        {
            return None;
        }
        device.taken = Some(id);
        device.taken_timestamp = shared.sample.timestamp;
        let mut sample = shared.sample;
        sample.device_id = self.inner.devices()[position].index;
        sample.process_memory_used_mb = process_memory_mb(shared.processes.as_deref(), self.pid);
        Some(sample)
    }

    /// Whether this process currently samples the device at `position` itself.
    pub fn is_sampler(&self, position: usize) -> bool {
        !matches!(self.devices[position].lock, Lock::Waiting(_))
    }
}

impl Drop for SharedBackend {
    fn drop(&mut self) {
        for device in &self.devices {
            if let Some(fd) = device.lock.raw_fd() {
                forget_fd(fd);
            }
        }
    }
}

impl DeviceBackend for SharedBackend {
    fn detector_name(&self) -> &'static str {
        self.inner.detector_name()
    }

    fn devices(&self) -> &[GpuDevice] {
        self.inner.devices()
    }

    fn read_device(&mut self, position: usize, timestamp: f64) -> DeviceReading {
        self.inner.read_device(position, timestamp)
    }

    fn sample(&mut self, timestamp: f64, out: &mut Vec<GpuSample>) {
        for position in 0..self.devices.len() {
            if self.samples_here(position) {
                let reading = self.inner.read_device(position, timestamp);
                self.publish(position, &reading);
                out.push(reading.sample);
            } else if let Some(sample) = self.take_shared(position) {
                out.push(sample);
            }
        }
    }

    fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.extend(self.inner.take_warnings());
        warnings
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    use vllm_profiler_format::ProcessMemory;

    use super::*;

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

    fn tick(backend: &mut SharedBackend, timestamp: f64) -> Vec<GpuSample> {
        let mut out = Vec::new();
        backend.sample(timestamp, &mut out);
        out
    }

    #[test]
    fn one_backend_reads_the_device_and_the_other_takes_its_samples_then_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::unix_now();
        let (inner_a, reads_a) = counting(Some("GPU-aa/../bb"));
        let (inner_b, reads_b) = counting(Some("GPU-aa/../bb"));
        // Two open lock files lock like two processes, even in one process.
        let mut a = SharedBackend::new(inner_a, dir.path()).ok().unwrap();
        let mut b = SharedBackend::new(inner_b, dir.path()).ok().unwrap();

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
        let mut holder = SharedBackend::new(inner, dir).ok().unwrap();
        tick(&mut holder, now);
        holder
    }

    #[test]
    fn a_sample_left_by_a_process_that_is_gone_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::unix_now();
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
        let mut reader = SharedBackend::new(reader_inner, dir.path()).ok().unwrap();
        assert!(tick(&mut reader, now + 0.1).is_empty());
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_header_announcing_more_than_the_file_holds_costs_no_memory() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::unix_now();
        let _holder = publishing(dir.path(), "GPU-3", now);
        let path = dir.path().join("nvmldetector-GPU-3.json");
        let (reader_inner, _) = counting(Some("GPU-3"));
        let mut reader = SharedBackend::new(reader_inner, dir.path()).ok().unwrap();
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
    fn a_sample_older_than_the_start_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (holder_inner, _) = counting(Some("GPU-2"));
        let mut holder = SharedBackend::new(holder_inner, dir.path()).ok().unwrap();
        tick(&mut holder, crate::unix_now() - 60.0);
        let (reader_inner, _) = counting(Some("GPU-2"));
        let mut reader = SharedBackend::new(reader_inner, dir.path()).ok().unwrap();
        assert!(tick(&mut reader, crate::unix_now()).is_empty());
    }

    #[test]
    fn a_device_without_uuid_is_sampled_by_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let (inner_a, reads_a) = counting(None);
        let (inner_b, reads_b) = counting(None);
        let mut a = SharedBackend::new(inner_a, dir.path()).ok().unwrap();
        let mut b = SharedBackend::new(inner_b, dir.path()).ok().unwrap();
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
        let Err((_, why)) = SharedBackend::new(inner, &open) else {
            panic!("an open dir must be refused");
        };
        assert!(why.contains("writable by other users"), "{why}");

        let fresh = tmp.path().join("a/b");
        prepare_runtime_dir(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_frame_is_taken_only_whole() {
        let mut long = Vec::new();
        frame_payload(br#"{"a":"a long first payload"}"#, &mut long);
        assert_eq!(
            framed_payload(&long),
            Ok(Some(&br#"{"a":"a long first payload"}"#[..]))
        );
        // A shorter payload written over a longer one: the leftover tail is ignored.
        let mut file = long.clone();
        let mut short = Vec::new();
        frame_payload(br#"{"b":1}"#, &mut short);
        file[..short.len()].copy_from_slice(&short);
        assert_eq!(framed_payload(&file), Ok(Some(&br#"{"b":1}"#[..])));
        // Caught half written: the header of the new one, the old bytes after it.
        let mut torn = long.clone();
        let mut next = Vec::new();
        frame_payload(br#"{"a":"a long first payloaX"}"#, &mut next);
        torn[..next.len() - 10].copy_from_slice(&next[..next.len() - 10]);
        assert_eq!(framed_payload(&torn), Ok(None));
        // Too short for the length it announces: how much to read.
        assert_eq!(framed_payload(&long[..long.len() - 1]), Err(long.len()));
        for junk in [
            &b""[..],
            b"no newline",
            b"vprof-shared-v1 x y\n{}",
            b"other 2 0\n{}",
        ] {
            assert_eq!(framed_payload(junk), Ok(None), "{junk:?}");
        }
    }

    #[test]
    fn a_sample_read_back_is_the_sample_written_to_the_last_bit() {
        // Without serde_json's float_roundtrip this timestamp came back 1 ulp off.
        let shared = SharedDeviceSample {
            sampler_pid: 1,
            sequence: 2,
            sample: GpuSample {
                timestamp: 1_795_482_243.760_378_1,
                gpu_utilization: Some(0.1 + 0.2),
                ..GpuSample::default()
            },
            processes: None,
        };
        let mut framed = Vec::new();
        frame_payload(&serde_json::to_vec(&shared).unwrap(), &mut framed);
        let payload = framed_payload(&framed).unwrap().unwrap();
        let back: SharedDeviceSample = serde_json::from_slice(payload).unwrap();
        assert_eq!(back, shared);
        assert_eq!(
            back.sample.timestamp.to_bits(),
            shared.sample.timestamp.to_bits()
        );
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
}
