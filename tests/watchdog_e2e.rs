//! `vllm-profiler watchdog` (seed 003) against the fake NVML: each check reads the next
//! scripted frame, so the tests say exactly at which check the command runs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A fake NVML whose one device shows these utilizations, one per check (the last repeats).
fn script(dir: &Path, utilizations: &[u32]) -> std::path::PathBuf {
    let frames: Vec<_> = utilizations
        .iter()
        .map(|u| json!({"gpu_utilization": u, "memory_controller_utilization": 0}))
        .collect();
    let path = dir.join("nvml.json");
    std::fs::write(
        &path,
        json!({"devices": [{"name": "Watched", "uuid": "GPU-w", "memory_total_mb": 1024,
                            "frames": frames}]})
        .to_string(),
    )
    .unwrap();
    path
}

fn watchdog(dir: &Path, utilizations: &[u32], args: &[&str]) -> Finished {
    let mut cmd = clean_command(cli_binary());
    cmd.arg("watchdog")
        .args(["--idle-threshold", "5", "--check-interval", "0.02"])
        .args(args)
        .env("FAKE_NVML_SCRIPT", script(dir, utilizations))
        .env("VLLM_PROFILING_NVML_LIBRARY", fake_nvml_library())
        .env("VLLM_PROFILING_AMDSMI_LIBRARY", dir.join("no-amd.so"))
        .env("MARK", dir.join("ran"));
    run(&mut cmd, LIMIT)
}

/// The watchdog's log lines about check `n`.
fn about(stderr: &str, n: u32) -> Vec<&str> {
    let tag = format!("check {n}: ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("vllm-profiler watchdog: "))
        .filter(|l| l.starts_with(&tag))
        .collect()
}

#[test]
fn idle_busy_idle_runs_the_command_once_at_the_third_idle_check_in_a_row() {
    let tmp = tempfile::tempdir().unwrap();
    // Checks 1-2 idle, 3 busy (resets), 4-6 idle: the limit of 3 is reached at check 6.
    let done = watchdog(
        tmp.path(),
        &[1, 2, 50, 0, 4, 1],
        &[
            "--idle-limit",
            "3",
            "--min-runtime",
            "0",
            "--",
            "sh",
            "-c",
            "echo ran >> \"$MARK\"",
        ],
    );
    assert_success(&done);
    let log = &done.stderr;
    assert_eq!(
        about(log, 1),
        ["check 1: GPU 1% < 5%, no new requests: idle 1/3"]
    );
    assert_eq!(
        about(log, 2),
        ["check 2: GPU 2% < 5%, no new requests: idle 2/3"]
    );
    assert_eq!(
        about(log, 3),
        ["check 3: GPU 50% >= 5%: active, idle count reset"]
    );
    assert_eq!(about(log, 5).len(), 1);
    let six = about(log, 6);
    assert_eq!(six.len(), 3, "{six:?}");
    assert!(six[1].starts_with("check 6: idle limit reached after"));
    assert_eq!(six[2], "check 6: the command succeeded; done");
    assert!(
        about(log, 7).is_empty(),
        "it stops once the command succeeded"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ran")).unwrap(),
        "ran\n"
    );
}

#[test]
fn a_failed_command_resets_the_count_and_the_watchdog_tries_again() {
    let tmp = tempfile::tempdir().unwrap();
    // Fails on its first run, succeeds on its second.
    let command = "n=$(cat \"$MARK\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$MARK\"; \
                   [ $n -ge 2 ]";
    let done = watchdog(
        tmp.path(),
        &[0],
        &[
            "--idle-limit",
            "2",
            "--min-runtime",
            "0",
            "--",
            "sh",
            "-c",
            command,
        ],
    );
    assert_success(&done);
    let two = about(&done.stderr, 2);
    assert!(two[2].starts_with("check 2: the command failed"), "{two:?}");
    assert_eq!(
        about(&done.stderr, 3),
        ["check 3: GPU 0% < 5%, no new requests: idle 1/2"]
    );
    assert_eq!(
        about(&done.stderr, 4).last().copied(),
        Some("check 4: the command succeeded; done")
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ran")).unwrap(),
        "2\n"
    );
}

#[test]
fn it_never_acts_before_the_minimum_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let done = watchdog(
        tmp.path(),
        &[0],
        &[
            "--idle-limit",
            "1",
            "--min-runtime",
            "0.3",
            "--",
            "sh",
            "-c",
            "echo ran >> \"$MARK\"",
        ],
    );
    assert_success(&done);
    let lines: Vec<&str> = done
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("vllm-profiler watchdog: "))
        .collect();
    let waited = lines.iter().filter(|l| l.ends_with("not acting")).count();
    assert!(
        waited >= 3,
        "0.3 s is at least 3 checks of 0.02 s: {lines:?}"
    );
    let ran = lines
        .iter()
        .find(|l| l.contains("idle limit reached after"))
        .expect("it acted");
    let seconds: f64 = ran
        .split("after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(seconds >= 0.3, "{ran}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ran")).unwrap(),
        "ran\n"
    );
}

#[test]
fn a_dry_run_logs_the_command_and_runs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let done = watchdog(
        tmp.path(),
        &[3],
        &[
            "--idle-limit",
            "2",
            "--min-runtime",
            "0",
            "--dry-run",
            "--",
            "sh",
            "-c",
            "echo ran >> \"$MARK\"",
        ],
    );
    assert_success(&done);
    let two = about(&done.stderr, 2);
    assert!(
        two[1].contains("dry run: would run [\"sh\", \"-c\""),
        "{two:?}"
    );
    assert!(!tmp.path().join("ran").exists());
}

/// Serves `requests_total N` on loopback: 0 on the first scrape, then one more on each of the
/// next `grows` scrapes, then the same.
fn requests_server(grows: u32) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU32::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let n = served.fetch_add(1, Ordering::SeqCst).min(grows);
            let body = format!(
                "# TYPE requests counter\nrequests_total{{code=\"200\"}} {n}\nrequests_created 1\n"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/metrics")
}

#[test]
fn a_growing_request_counter_counts_as_activity() {
    let tmp = tempfile::tempdir().unwrap();
    let url = requests_server(2);
    // The GPU is idle throughout; the counter grows on scrapes 2 and 3.
    let done = watchdog(
        tmp.path(),
        &[0],
        &[
            "--idle-limit",
            "2",
            "--min-runtime",
            "0",
            "--requests-url",
            &url,
            "--requests-metric",
            "requests_total",
            "--",
            "sh",
            "-c",
            "echo ran >> \"$MARK\"",
        ],
    );
    assert_success(&done);
    let log = &done.stderr;
    assert_eq!(
        about(log, 1),
        ["check 1: GPU 0% < 5%, no new requests: idle 1/2"]
    );
    assert_eq!(
        about(log, 2),
        ["check 2: requests came in: active, idle count reset"]
    );
    assert_eq!(about(log, 3), ["check 3: requests came in: active"]);
    assert_eq!(
        about(log, 4),
        ["check 4: GPU 0% < 5%, no new requests: idle 1/2"]
    );
    assert!(about(log, 5)[1].starts_with("check 5: idle limit reached"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ran")).unwrap(),
        "ran\n"
    );
}

#[test]
fn without_a_command_or_dry_run_it_is_a_usage_error() {
    let mut cmd = clean_command(cli_binary());
    cmd.args(["watchdog", "--max-checks", "1"]);
    let done = run(&mut cmd, LIMIT);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr.contains("give the command to run after `--`"));
}
