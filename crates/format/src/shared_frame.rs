//! The file through which the host's profiled processes share a device's samples (the GPU
//! crate's shared sampler writes and reads it): a header line `vprof-shared-v1 <length>
//! <crc32>`, then that many bytes of JSON, a [`SharedDeviceSample`]. Another process wrote
//! it: nothing in it is trusted before the length and the CRC agree.

use serde::{Deserialize, Serialize};

use crate::gpu::{GpuSample, ProcessMemory};

/// The latest sample of one device, as the process elected to sample it shares it with the
/// other profiled processes of the host (a small file in the runtime dir, replaced whole on
/// every sample). Internal to the agent; readers check `sampler_pid` and `sequence` to tell a
/// new sample from one already seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedDeviceSample {
    /// The process that sampled the device.
    pub sampler_pid: u32,
    /// Counts that process's samples of the device.
    pub sequence: u64,
    /// Raised by a process that takes sampling over from a holder whose samples went stale
    /// (stopped, hung in the vendor library): a holder that sees a newer generation yields.
    #[serde(default)]
    pub generation: u64,
    /// The sampler's interval, seconds (0: not known yet); a frame written longer ago than
    /// three of them is stale.
    #[serde(default)]
    pub interval_s: f64,
    /// Unix seconds when the frame was written (0: not said); staleness counts from it, not
    /// from the sample's time, so that a slow vendor call does not look like a stopped holder.
    #[serde(default)]
    pub written_at: f64,
    /// `process_memory_used_mb` is the sampler's own; readers take theirs from `processes`.
    pub sample: GpuSample,
    /// Every process's memory on the device; `None` when it could not be read.
    pub processes: Option<Vec<ProcessMemory>>,
}

/// First word of a shared sample file's header line: `vprof-shared-v1 <length> <crc32>`.
pub const HEADER_TAG: &str = "vprof-shared-v1";
/// The largest shared sample file read: one device's sample with a process list of
/// thousands of entries fits many times over.
pub const MAX_SHARED_FILE_BYTES: usize = 1 << 20;

/// The JSON of a shared sample file, if it is whole: the length and CRC-32 of the header
/// match what follows. `Err(needed)` when `bytes` is too short for the length it announces.
pub fn framed_payload(bytes: &[u8]) -> Result<Option<&[u8]>, usize> {
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
pub fn frame_payload(json: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = writeln!(out, "{HEADER_TAG} {} {}", json.len(), crc32fast::hash(json));
    out.extend_from_slice(json);
}

#[cfg(test)]
mod tests {
    use super::*;

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
            generation: 3,
            interval_s: 0.1,
            written_at: 1_795_482_243.9,
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
}
