use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, SystemTime};

use super::*;

fn published(pid: u32) -> Vec<u8> {
    serde_json::to_vec(&PublishedMetrics {
        schema_version: SCHEMA_VERSION,
        published_at: unix_now(),
        snapshot: MetricsSnapshot {
            pid,
            total_steps: u64::from(pid),
            ..MetricsSnapshot::default()
        },
    })
    .unwrap()
}

fn age(path: &Path, by: Duration) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

fn pids(snapshots: &[MetricsSnapshot]) -> Vec<u32> {
    snapshots.iter().map(|s| s.pid).collect()
}

#[test]
fn one_member_serves_and_another_takes_over_when_it_leaves() {
    let runtime = tempfile::tempdir().unwrap();
    let mut first = Group::join(runtime.path(), "127.0.0.1:9").unwrap();
    let mut second = Group::join(runtime.path(), "127.0.0.1:9").unwrap();
    assert!(first.try_serve());
    assert!(!second.try_serve());
    assert!(first.try_serve(), "the holder keeps it");
    drop(first);
    assert!(second.try_serve());
    // Another spelling of the port is the same group; another port another.
    let mut spelled = Group::join(runtime.path(), "localhost:9").unwrap();
    assert!(!spelled.try_serve());
    let mut elsewhere = Group::join(runtime.path(), "127.0.0.1:10").unwrap();
    assert!(elsewhere.try_serve());
    let dir = runtime.path().join("prometheus-9");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn published_figures_read_back_and_a_member_that_leaves_takes_them_away() {
    let runtime = tempfile::tempdir().unwrap();
    let group = Group::join(runtime.path(), ":9").unwrap();
    let dir = runtime.path().join("prometheus-9");
    fs::write(dir.join("4242.json"), published(4242)).unwrap();
    let own = MetricsSnapshot {
        pid: std::process::id(),
        ..MetricsSnapshot::default()
    };
    group.publish(&own).unwrap();
    let mut reader = Group::join(runtime.path(), ":9").unwrap();
    reader.pid = 1; // as another process reads
    let (others, more) = reader.others(Duration::from_secs(60));
    assert!(!more);
    let mut expected = vec![4242, std::process::id()];
    expected.sort();
    assert_eq!(pids(&others), expected);
    assert_eq!(
        others.iter().find(|s| s.pid == 4242).unwrap().total_steps,
        4242
    );
    drop(group);
    assert_eq!(pids(&reader.others(Duration::from_secs(60)).0), [4242]);
    reader.pid = 2; // so that its drop removes nothing of the test's
}

#[test]
fn hostile_files_are_skipped_and_expired_ones_removed_by_the_server() {
    let runtime = tempfile::tempdir().unwrap();
    let mut server = Group::join(runtime.path(), ":9").unwrap();
    assert!(server.try_serve());
    let dir = runtime.path().join("prometheus-9");
    fs::write(dir.join("100.json"), published(100)).unwrap();
    fs::write(dir.join("101.json"), published(999)).unwrap(); // says another pid
    fs::write(dir.join("102.json"), b"{not json").unwrap();
    let mut big = published(103);
    big.resize(PublishedMetrics::MAX_BYTES as usize + 1, b' ');
    fs::write(dir.join("103.json"), big).unwrap();
    fs::write(dir.join("elsewhere.json"), published(104)).unwrap();
    symlink(dir.join("100.json"), dir.join("105.json")).unwrap();
    nix::unistd::mkfifo(&dir.join("106.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    fs::write(dir.join("0107.json"), published(107)).unwrap();
    fs::write(dir.join("108.json.tmp"), published(108)).unwrap();
    fs::write(dir.join("109.json"), published(109)).unwrap();
    age(&dir.join("109.json"), Duration::from_secs(120));
    fs::write(dir.join("110.json.tmp"), published(110)).unwrap();
    age(&dir.join("110.json.tmp"), Duration::from_secs(120));
    fs::write(dir.join("111.json"), published(111)).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&published(111)).unwrap();
    json["schema_version"] = (SCHEMA_VERSION + 1).into();
    fs::write(dir.join("111.json"), json.to_string()).unwrap();
    assert_eq!(pids(&server.others(Duration::from_secs(60)).0), [100]);
    assert!(!dir.join("109.json").exists(), "expired: removed");
    assert!(!dir.join("110.json.tmp").exists(), "expired: removed");
    assert!(dir.join("108.json.tmp").exists(), "being written: left");
}

#[test]
fn a_member_that_does_not_serve_removes_nothing_and_reads_the_lowest_max_members() {
    let runtime = tempfile::tempdir().unwrap();
    let group = Group::join(runtime.path(), ":9").unwrap();
    let dir = runtime.path().join("prometheus-9");
    for pid in (1000..1000 + MAX_MEMBERS as u32 + 10).rev() {
        fs::write(dir.join(format!("{pid}.json")), published(pid)).unwrap();
    }
    fs::write(dir.join("5.json"), published(5)).unwrap();
    age(&dir.join("5.json"), Duration::from_secs(120));
    let (others, more) = group.others(Duration::from_secs(60));
    assert!(more);
    // The lowest pids: a stable set.
    let expected: Vec<u32> = (1000..1000 + MAX_MEMBERS as u32).collect();
    assert_eq!(pids(&others), expected);
    assert!(dir.join("5.json").exists());
}

#[test]
fn a_runtime_dir_others_can_write_is_refused() {
    let runtime = tempfile::tempdir().unwrap();
    fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = Group::join(runtime.path(), ":9").err().unwrap();
    assert!(err.contains("writable by other users"), "{err}");
}

#[test]
fn what_a_file_holds_is_bounded_and_a_negative_sum_is_none() {
    let runtime = tempfile::tempdir().unwrap();
    let group = Group::join(runtime.path(), ":9").unwrap();
    let dir = runtime.path().join("prometheus-9");
    let sample = |device_id| vllm_profiler_format::GpuSample {
        device_id,
        gpu_utilization: Some(1.0),
        ..Default::default()
    };
    let mut snapshot = MetricsSnapshot {
        pid: 300,
        step_seconds_sum: -5.0,
        latest_samples: vec![sample(0), sample(0)],
        ..MetricsSnapshot::default()
    };
    snapshot.latest_samples.extend((1..100).map(sample));
    let bytes = serde_json::to_vec(&PublishedMetrics {
        schema_version: SCHEMA_VERSION,
        published_at: 0.0,
        snapshot,
    })
    .unwrap();
    fs::write(dir.join("300.json"), bytes).unwrap();
    let (others, _) = group.others(Duration::from_secs(60));
    let read = &others[0];
    assert_eq!(read.step_seconds_sum, 0.0);
    let ids: Vec<u32> = read.latest_samples.iter().map(|s| s.device_id).collect();
    assert_eq!(
        ids,
        (0..MAX_DEVICES as u32).collect::<Vec<_>>(),
        "each once, 64 at most"
    );
}

#[test]
fn junk_names_hide_no_member_and_a_file_dated_ahead_expires() {
    let runtime = tempfile::tempdir().unwrap();
    let mut server = Group::join(runtime.path(), ":9").unwrap();
    assert!(server.try_serve());
    let dir = runtime.path().join("prometheus-9");
    for i in 0..5000 {
        fs::write(dir.join(format!("junk-{i}")), b"").unwrap();
    }
    fs::write(dir.join("400.json"), published(400)).unwrap();
    fs::write(dir.join("401.json"), published(401)).unwrap();
    // A clock set back: dated an hour ahead, it is expired (and removed), not kept forever.
    let file = File::options()
        .write(true)
        .open(dir.join("401.json"))
        .unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(pids(&server.others(Duration::from_secs(60)).0), [400]);
    assert!(!dir.join("401.json").exists());
}

#[test]
fn a_member_makes_its_group_dir_again_when_it_was_removed() {
    let runtime = tempfile::tempdir().unwrap();
    let group = Group::join(runtime.path(), ":9").unwrap();
    let dir = runtime.path().join("prometheus-9");
    fs::remove_dir_all(&dir).unwrap();
    let own = MetricsSnapshot {
        pid: std::process::id(),
        ..MetricsSnapshot::default()
    };
    group.publish(&own).unwrap();
    assert!(dir.join(format!("{}.json", std::process::id())).is_file());
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
