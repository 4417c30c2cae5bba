//! A shared sample file's framing: a header line `vprof-shared-v1 <length> <crc32>`, then
//! that many bytes of JSON. Another process wrote it: nothing in it is trusted before the
//! length and the CRC agree.

/// First word of a shared sample file's header line: `vprof-shared-v1 <length> <crc32>`.
pub(super) const HEADER_TAG: &str = "vprof-shared-v1";
/// The largest shared sample file read: one device's sample with a process list of
/// thousands of entries fits many times over.
pub(super) const MAX_SHARED_FILE_BYTES: usize = 1 << 20;

/// The JSON of a shared sample file, if it is whole: the length and CRC-32 of the header
/// match what follows. `Err(needed)` when `bytes` is too short for the length it announces.
pub(super) fn framed_payload(bytes: &[u8]) -> Result<Option<&[u8]>, usize> {
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
pub(super) fn frame_payload(json: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = writeln!(out, "{HEADER_TAG} {} {}", json.len(), crc32fast::hash(json));
    out.extend_from_slice(json);
}
