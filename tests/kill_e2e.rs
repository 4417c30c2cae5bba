//! End to end: a profiled process killed with SIGKILL at seeded random moments loses at most
//! the steps of the last second before the kill. Its reports come back from its crash-safe
//! journal through `vllm-profiler recover` (and `vllm-profiler report`, which recovers first).
//! The real-vLLM version of this test, with vLLM's engine core, is in
//! python/tests/test_real_vllm.py.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vllm_profiler_format::unix_now;
use vllm_profiler_tests::*;

/// Steps that ended this long before the kill must all be recovered.
const BOUND_S: f64 = 1.0;

/// A tiny deterministic generator, so that every run kills at the same moments.
fn delays(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            0.2 + (x % 2800) as f64 / 1000.0
        })
        .collect()
}

/// The truth log: the step numbers (1, 2, ...) with the Unix time each ended at.
fn truth(path: &Path) -> Vec<(u32, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (n, t) = line.split_once(' ')?;
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

fn kill_and_recover(delay: f64, use_report: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let truth_path = tmp.path().join("truth.txt");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .arg("until-killed")
        .arg(&truth_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !truth_path.exists() || truth(&truth_path).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the host never stepped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs_f64(delay));
    child.kill().unwrap();
    let killed_at = unix_now();
    child.wait().unwrap();

    let cli = if use_report {
        Command::new(cli_binary())
            .args(["report", "--json"])
            .arg(&out)
            .output()
            .unwrap()
    } else {
        Command::new(cli_binary())
            .arg("recover")
            .arg(&out)
            .output()
            .unwrap()
    };
    let said =
        String::from_utf8_lossy(&cli.stdout).into_owned() + &String::from_utf8_lossy(&cli.stderr);
    assert!(cli.status.success(), "{said}");
    let pid = child.id();
    assert!(
        said.contains(&format!("pid {pid}: wrote 4 reports")),
        "{said}"
    );
    let names = file_names(&out);
    assert!(
        names.iter().all(|n| !n.starts_with("journal_")),
        "the journal is removed once recovered: {names:?}"
    );
    let reports = read_reports(&out, pid);
    let ended = truth(&truth_path);
    let safe = ended
        .iter()
        .filter(|(_, t)| *t <= killed_at - BOUND_S)
        .count();
    let kept: Vec<u32> = reports
        .steps
        .detailed_steps
        .iter()
        .map(|s| s.num_tokens)
        .collect();
    // Every step up to a second before the kill, in order; nothing that never ended.
    assert!(
        kept.len() >= safe && kept.len() <= ended.len(),
        "delay {delay}: {} recovered, {safe} ended {BOUND_S} s before the kill, {} ended",
        kept.len(),
        ended.len()
    );
    assert_eq!(
        kept,
        (1..=kept.len() as u32).collect::<Vec<_>>(),
        "delay {delay}"
    );
    assert_eq!(reports.summary.total_steps, kept.len() as u64);
    // The span of a step whose end was not drained yet may be in, alone.
    let spans = reports.summary.layer_performance["model.layers.0"].call_count;
    assert!(
        spans == kept.len() as u64 || spans == kept.len() as u64 + 1,
        "{spans} spans, {} steps",
        kept.len()
    );
}

#[test]
fn sigkill_at_seeded_moments_loses_at_most_the_last_second() {
    for delay in delays(0x5eed, 4) {
        kill_and_recover(delay, false);
    }
}

#[test]
fn report_recovers_a_killed_process_before_it_reads() {
    kill_and_recover(0.7, true);
}

#[test]
fn a_kill_right_after_a_flush_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .args(["flush-then-wait", "37"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "flushed\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let cli = Command::new(cli_binary())
        .arg("recover")
        .arg(&out)
        .output()
        .unwrap();
    assert!(cli.status.success());
    let reports = read_reports(&out, child.id());
    assert_eq!(reports.summary.total_steps, 37);
    assert_eq!(reports.steps.detailed_steps.len(), 37);
    assert_eq!(
        reports.summary.layer_performance["model.layers.1"].call_count,
        37
    );
}

#[test]
fn a_flush_after_disable_writes_no_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut cmd = clean_command("python3");
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .arg("flush-after-disable")
        .arg(agent_library())
        .arg(&out);
    let done = run(&mut cmd, Duration::from_secs(30));
    assert_success(&done);
    let pid = done.pid;
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("journal_{pid}.lock journal_{pid}.log journal_{pid}.snapshot"),
            format!("detailed_steps_{pid}.json performance_summary_{pid}.json trace_{pid}.json"),
        ]
    );
}

#[test]
fn a_forked_child_does_not_keep_its_killed_parents_journal_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cmd = profiled_command("python3", &out);
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .arg("fork-child-outlives")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut parent = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child: i32 = line.trim().strip_prefix("child ").unwrap().parse().unwrap();
    parent.kill().unwrap();
    parent.wait().unwrap();
    let cli = Command::new(cli_binary())
        .arg("recover")
        .arg(&out)
        .output()
        .unwrap();
    // The child lives on, holding copies of its parent's fds.
    let _ = nix_kill(child);
    let said = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(
        said.contains(&format!("pid {}: wrote 4 reports (6 steps)", parent.id())),
        "{said}"
    );
}

fn nix_kill(pid: i32) -> std::io::Result<()> {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(drop)
}
