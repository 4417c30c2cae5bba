//! The journal's files read back: frames, generations, writers, locks.

use std::fs::{self};
use std::time::{Duration, Instant};

use super::files::*;
use super::writer::{boot_id, stat};
use super::*;

fn log_of(frames: &[&[u8]], tail: &[u8]) -> (tempfile::TempDir, Vec<Result<Vec<u8>, String>>) {
    let dir = tempfile::tempdir().unwrap();
    let header = LogHeader {
        version: JOURNAL_VERSION,
        generation: 3,
        writer: Writer::this_process(9),
    };
    let mut bytes = frame(&postcard::to_stdvec(&header).unwrap());
    for f in frames {
        bytes.extend(frame(f));
    }
    bytes.extend_from_slice(tail);
    fs::write(dir.path().join(log_file_name(9)), bytes).unwrap();
    let mut reader = open_log(dir.path(), 9, 3)
        .unwrap()
        .expect("a log of generation 3");
    let mut got = Vec::new();
    while let Some(f) = reader.next_frame() {
        got.push(f);
    }
    (dir, got)
}

#[test]
fn frames_read_back_and_a_torn_damaged_or_empty_tail_stops_the_log() {
    let (_, got) = log_of(&[b"one", b"two"], b"");
    assert_eq!(got, [Ok(b"one".to_vec()), Ok(b"two".to_vec())]);
    let whole = frame(b"three");
    for cut in 1..whole.len() {
        let (_, got) = log_of(&[b"one"], &whole[..cut]);
        assert_eq!(got.len(), 2, "cut at {cut}");
        assert!(got[1].is_err(), "cut at {cut}");
    }
    let mut damaged = whole.clone();
    *damaged.last_mut().unwrap() ^= 1;
    assert!(log_of(&[], &damaged).1[0].is_err());
    // Zeros (a power-loss tail) are an empty frame: damage, the end.
    let (_, got) = log_of(&[b"one"], &[0; 4096]);
    assert_eq!(got.len(), 2);
    assert!(got[1].is_err());
    // A length past the limit is damage, not an allocation.
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.extend([0; 12]);
    assert!(log_of(&[], &huge).1[0].is_err());
}

#[test]
fn a_log_of_another_generation_is_not_the_snapshots() {
    let (dir, _) = log_of(&[b"one"], b"");
    assert!(open_log(dir.path(), 9, 2).unwrap().is_none());
    assert!(open_log(dir.path(), 9, 3).unwrap().is_some());
    // Between the renames of a compaction the next log is the snapshot's.
    fs::rename(
        dir.path().join(log_file_name(9)),
        dir.path().join(next_log_file_name(9)),
    )
    .unwrap();
    assert!(open_log(dir.path(), 9, 3).unwrap().is_some());
}

#[test]
fn this_process_is_running_and_another_start_time_is_not() {
    let me = Writer::this_process(std::process::id());
    assert!(me.start_ticks > 0);
    assert!(me.is_running());
    assert!(!Writer {
        start_ticks: me.start_ticks + 1,
        ..me.clone()
    }
    .is_running());
    assert!(!Writer {
        boot_id: "another boot".into(),
        ..me
    }
    .is_running());
}

#[test]
fn a_killed_process_not_reaped_yet_is_not_running() {
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let writer = Writer {
        pid: child.id(),
        boot_id: boot_id(),
        start_ticks: stat(child.id()).unwrap().1,
    };
    assert!(writer.is_running());
    child.kill().unwrap();
    // Not waited for: a zombie until then.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat(child.id()).is_some_and(|(state, _)| state != 'Z') {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!writer.is_running());
    child.wait().unwrap();
    assert!(!writer.is_running());
}

#[test]
fn a_held_lock_is_a_running_writer_and_a_free_one_is_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let held = take_lock(dir.path(), 5).unwrap().expect("free");
    assert!(matches!(claim(dir.path(), 5).unwrap(), Claimed::Running));
    assert!(
        take_lock(dir.path(), 5).unwrap().is_none(),
        "one writer per journal"
    );
    drop(held);
    match claim(dir.path(), 5).unwrap() {
        Claimed::Claim(claim) => assert!(claim.locked()),
        Claimed::Running => panic!("the lock was let go"),
    }
    // No lock file at all: claimed, without a lock.
    match claim(dir.path(), 6).unwrap() {
        Claimed::Claim(claim) => assert!(!claim.locked()),
        Claimed::Running => panic!("nothing holds it"),
    }
}

#[test]
fn list_takes_each_journal_once_by_its_one_spelling() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "journal_12.snapshot",
        "journal_12.log",
        "journal_12.lock",
        "journal_7.log.next",
        "journal_9.log",
        "journal_012.snapshot",
        "journal_+15.snapshot",
        "journal_x.snapshot",
        "journal_3.snapshot.tmp",
        "performance_summary_3.json",
    ] {
        fs::write(dir.path().join(name), b"").unwrap();
    }
    assert_eq!(list(dir.path()).unwrap(), [7, 9, 12]);
}
