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
//! - A holder can stop without dying (SIGSTOP, a debugger, a cgroup freezer, a hung vendor
//!   call) and keep its lock. A process whose device's samples are stale (the newest is older
//!   than three of the sampler's intervals, and at least [`MIN_STALE_S`]) takes sampling over
//!   without the lock: it publishes with a higher `generation` and keeps trying the lock. A
//!   holder or taker that reads a newer generation (or the same one from a higher pid) of a
//!   live process yields, before its next write. So at most one process writes a device's
//!   samples, but for one interval around a takeover.
//!
//! A forked child must not keep its parent's locks alive (a `flock` belongs to the open file,
//! which the child shares): each lock file is noted for `fork_closed::close_inherited`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vllm_profiler_format::shared_frame::{frame_payload, framed_payload, MAX_SHARED_FILE_BYTES};
use vllm_profiler_format::{unix_now, GpuDevice, GpuSample, SharedDeviceSample};

use crate::backend::{process_memory_mb, DeviceBackend, DeviceReading};
use crate::fork_closed;
use lock::{is_alive, Change, Lock, Seen};
use runtime_dir::file_stem;
pub use runtime_dir::{default_runtime_dir, open_shared_file, prepare_runtime_dir};

mod lock;
mod runtime_dir;

/// A shared sample older than this when a process starts sharing is not taken: it is left
/// from an earlier holder, not the current one.
const STALE_AT_START_S: f64 = 5.0;
/// Samples go stale after three of the sampler's intervals, and never sooner than this: a
/// holder the scheduler kept waiting a moment is not taken over.
pub const MIN_STALE_S: f64 = 0.5;
const STALE_INTERVALS: f64 = 3.0;

struct SharedDevice {
    /// Declared before `lock`, so dropped first: the note goes before the fd is closed.
    close_in_child: Option<fork_closed::CloseInChild>,
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
    /// The generation this process publishes with.
    generation: u64,
    /// The bytes this process wrote last: while the file still starts with them, nobody else
    /// wrote, and the sampler's tick reads no JSON.
    last_frame: Vec<u8>,
    /// When the newest sample read was taken, and the interval its sampler gave: what
    /// staleness is judged by (before any, from when this process started sharing).
    seen_timestamp: Option<f64>,
    seen_interval_s: f64,
    started: f64,
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
    /// This process's last tick and the gap before it (its sampling interval, as it runs).
    last_tick: Option<f64>,
    interval_s: f64,
}

impl SharedBackend {
    /// Shares `inner`'s devices through `dir` (see [`prepare_runtime_dir`]), sampling every
    /// `interval` (as the ticks come: the gap between them is measured). `Err` says why
    /// sharing is impossible; the caller then samples with `inner` alone.
    pub fn new(
        inner: Box<dyn DeviceBackend>,
        dir: &Path,
        interval: std::time::Duration,
    ) -> Result<SharedBackend, (Box<dyn DeviceBackend>, String)> {
        if let Err(why) = prepare_runtime_dir(dir) {
            return Err((inner, why));
        }
        let started = unix_now();
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
                    let data = open_shared_file(&dir.join(format!("{stem}.json")))?;
                    Ok::<_, std::io::Error>((lock, data))
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
                    close_in_child: lock.raw_fd().map(fork_closed::close_in_child),
                    lock,
                    data,
                    published: 0,
                    taken: None,
                    taken_timestamp: started - STALE_AT_START_S,
                    generation: 0,
                    last_frame: Vec::new(),
                    seen_timestamp: None,
                    seen_interval_s: 0.0,
                    started,
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
            last_tick: None,
            interval_s: interval.as_secs_f64(),
        })
    }

    /// Whether this process samples the device at `position` at `now`, given the device's
    /// newest shared sample `frame`: it holds its lock (taking it now if its holder is gone),
    /// or takes over from a stale holder, or the device is not shared; a newer generation
    /// elsewhere makes it yield (see the module comment).
    fn samples_here(
        &mut self,
        position: usize,
        now: f64,
        frame: Option<&SharedDeviceSample>,
    ) -> bool {
        let pid = self.pid;
        let interval_s = self.interval_s;
        let newer_elsewhere = self.newer_elsewhere(position, frame);
        let device = &mut self.devices[position];
        let stale_after =
            (STALE_INTERVALS * device.seen_interval_s.max(interval_s)).max(MIN_STALE_S);
        let stale = now - device.seen_timestamp.unwrap_or(device.started) > stale_after;
        // A live process of another pid writes fresh samples (the holder, or a taker that the
        // lock is about to pass to).
        let served =
            !stale && frame.is_some_and(|f| f.sampler_pid != pid && is_alive(f.sampler_pid));
        let seen = Seen {
            newer_elsewhere,
            served,
            stale,
        };
        let (lock, change) = std::mem::replace(&mut device.lock, Lock::Unshared).on_tick(&seen);
        let frame_generation = frame.map_or(0, |f| f.generation);
        let failed = match change {
            Change::Kept => None,
            Change::Took => {
                device.generation = device.generation.max(frame_generation);
                None
            }
            Change::TookOver => {
                // Saturating: the file is another process's word.
                device.generation = device.generation.max(frame_generation).saturating_add(1);
                None
            }
            Change::Failed(errno) => Some(errno),
        };
        device.lock = lock;
        if let Some(errno) = failed {
            device.close_in_child = None;
            device.lock = Lock::Unshared;
            device.data = None;
            self.warnings.push(format!(
                "cannot lock the sampler of GPU {} ({errno}); this process samples it itself",
                self.inner.devices()[position].index
            ));
        }
        !self.devices[position].lock.is_waiting()
    }

    /// Whether `frame` is a live process's with a newer (generation, pid) than this one's:
    /// a writer that reads it yields.
    fn newer_elsewhere(&self, position: usize, frame: Option<&SharedDeviceSample>) -> bool {
        let generation = self.devices[position].generation;
        frame.is_some_and(|f| {
            f.sampler_pid != self.pid
                && (f.generation, f.sampler_pid) > (generation, self.pid)
                && is_alive(f.sampler_pid)
        })
    }

    /// Right before a write, after the vendor call: a writer that another one's newer frame
    /// reached meanwhile yields instead of writing over it (with a vendor call slower than
    /// the interval, two writers would otherwise only ever read their own frames).
    fn yields_before_writing(&mut self, position: usize) -> bool {
        let frame = self.read_frame(position);
        if !self.newer_elsewhere(position, frame.as_ref()) {
            return false;
        }
        let device = &mut self.devices[position];
        device.lock = std::mem::replace(&mut device.lock, Lock::Unshared).yielded();
        device.lock.is_waiting()
    }

    /// Writes `reading` as the device's frame; `written_at` is the tick's time plus what the
    /// tick took so far (the vendor call).
    fn publish(&mut self, position: usize, reading: &DeviceReading, written_at: f64) {
        let device = &mut self.devices[position];
        let (Lock::Held(_) | Lock::Taking(_), Some(data)) = (&device.lock, &device.data) else {
            return;
        };
        device.published += 1;
        let shared = SharedDeviceSample {
            sampler_pid: self.pid,
            sequence: device.published,
            generation: device.generation,
            interval_s: self.interval_s,
            written_at,
            sample: reading.sample.clone(),
            processes: reading.processes.clone(),
        };
        let written = serde_json::to_vec(&shared)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                frame_payload(&json, &mut self.write_buf);
                device.last_frame.clear();
                device.last_frame.extend_from_slice(&self.write_buf);
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

    /// The device's shared sample file, if it holds a whole frame that this process did not
    /// write; what staleness is judged by is noted.
    fn read_frame(&mut self, position: usize) -> Option<SharedDeviceSample> {
        let device = &mut self.devices[position];
        let data = device.data.as_ref()?;
        if self.read_buf.len() < 4096 {
            self.read_buf.resize(4096, 0);
        }
        let payload = loop {
            let n = data.read_at(&mut self.read_buf, 0).ok()?;
            if !device.last_frame.is_empty() && self.read_buf[..n].starts_with(&device.last_frame) {
                return None; // our own, as we wrote it
            }
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
        let frame: SharedDeviceSample = serde_json::from_slice(payload).ok()?;
        let written = if frame.written_at > 0.0 {
            frame.written_at
        } else {
            frame.sample.timestamp
        };
        let newest = written.is_finite() && device.seen_timestamp.is_none_or(|seen| written > seen);
        if newest {
            device.seen_timestamp = Some(written);
            device.seen_interval_s = if frame.interval_s.is_finite() {
                frame.interval_s.clamp(0.0, 3600.0)
            } else {
                0.0
            };
        }
        Some(frame)
    }

    /// `frame`'s sample, if it is new since the last one taken and its sampler lives.
    fn take(&mut self, position: usize, frame: SharedDeviceSample) -> Option<GpuSample> {
        let device = &mut self.devices[position];
        let id = (frame.sampler_pid, frame.sequence);
        if device.taken == Some(id)
            || frame.sample.timestamp <= device.taken_timestamp
            || !is_alive(frame.sampler_pid)
        {
            return None;
        }
        device.taken = Some(id);
        device.taken_timestamp = frame.sample.timestamp;
        let mut sample = frame.sample;
        sample.device_id = self.inner.devices()[position].index;
        sample.process_memory_used_mb = process_memory_mb(frame.processes.as_deref(), self.pid);
        Some(sample)
    }

    /// Whether this process currently samples the device at `position` itself.
    pub fn is_sampler(&self, position: usize) -> bool {
        !self.devices[position].lock.is_waiting()
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
        if let Some(last) = self.last_tick.filter(|&last| timestamp > last) {
            self.interval_s = (timestamp - last).min(3600.0);
        }
        self.last_tick = Some(timestamp);
        let tick = std::time::Instant::now();
        for position in 0..self.devices.len() {
            let frame = self.read_frame(position);
            if self.samples_here(position, timestamp, frame.as_ref()) {
                let reading = self.inner.read_device(position, timestamp);
                if !self.yields_before_writing(position) {
                    let written_at = timestamp + tick.elapsed().as_secs_f64();
                    self.publish(position, &reading, written_at);
                }
                out.push(reading.sample);
            } else if let Some(sample) = frame.and_then(|frame| self.take(position, frame)) {
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
mod tests;
