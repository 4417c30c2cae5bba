//! `vllm-profiler trace DIR -o OUT.json` on dirs written here with the format crate's types:
//! one run's traces on one clock, named by role, nested, each device's counters once; what a
//! hostile trace says is not trusted.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use vllm_profiler_format as format;

fn arg_count(event: &Value, key: &str) -> Option<u64> {
    event["args"][key].as_u64()
}

#[test]
fn trace_merges_a_run_on_one_clock_with_each_device_once() {
    let tmp = tempfile::tempdir().unwrap();
    two_runs(tmp.path());
    let out_file = tmp.path().join("run.json");
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("holds other runs too (a); merged the latest, b"),
        "{stderr}"
    );
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let events = merged["traceEvents"].as_array().unwrap();
    assert_eq!(merged["otherData"]["run_id"], "b");
    assert_eq!(merged["otherData"]["processes"], 3);
    // Processes named by role, in role order; the GPUs on a process of their own.
    let mut names: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (0, "GPUs"),
            (200, "engine_core"),
            (201, "worker rank 0"),
            (202, "worker rank 1")
        ]
    );
    // Steps and spans on the Unix clock: the process's start plus the event's offset.
    let steps: Vec<(u64, f64)> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "step 0")
        .map(|e| (e["pid"].as_u64().unwrap(), e["ts"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            (200, 2000.0e6 + 1000.0),
            (201, 2001.0e6 + 1000.0),
            (202, 2001.5e6 + 1000.0)
        ]
    );
    // Integers stay integers.
    let step = events.iter().find(|e| e["name"] == "step 0").unwrap();
    assert_eq!(arg_count(step, "batch_size"), Some(3));
    assert!(step["args"]["batch_size"].is_u64());
    // Nesting: on each thread, each event ends inside the one it starts in.
    let mut by_thread: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let ts = e["ts"].as_f64().unwrap();
        let end = ts + e["dur"].as_f64().unwrap();
        by_thread
            .entry((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
            .or_default()
            .push((ts, end));
    }
    for intervals in by_thread.values_mut() {
        intervals.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut open: Vec<f64> = Vec::new();
        for (start, end) in intervals.iter() {
            while open.last().is_some_and(|&e| e <= *start) {
                open.pop();
            }
            if let Some(&outer) = open.last() {
                assert!(
                    *end <= outer,
                    "({start}, {end}) crosses its parent's end {outer}"
                );
            }
            open.push(*end);
        }
    }
    // The device's counters once: the 5 samples of pid 201, none of the processes' own.
    let counters: Vec<(&str, u64, f64)> = events
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["pid"].as_u64().unwrap(),
                e["ts"].as_f64().unwrap(),
            )
        })
        .collect();
    let utilization: Vec<f64> = counters
        .iter()
        .filter(|c| c.0 == "GPU 0 utilization (%)")
        .map(|c| c.2)
        .collect();
    assert_eq!(utilization.len(), 5, "{counters:?}");
    assert!(counters.iter().all(|c| c.1 == 0));
    assert_eq!(utilization[0], 2001.0e6);
    assert_eq!(counters.len(), 10, "utilization and memory, 5 samples each");

    // --run picks the other run; an unknown one is an error naming the runs.
    let other = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
        "--run".as_ref(),
        "a".as_ref(),
    ]);
    assert!(other.status.success(), "{other:?}");
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(merged["otherData"]["processes"], 3);
    let unknown = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
        "--run".as_ref(),
        "zzz".as_ref(),
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8(unknown.stderr).unwrap();
    assert!(
        stderr.contains("no run \"zzz\"") && stderr.contains("runs: a, b"),
        "{stderr}"
    );
}

#[test]
fn moving_to_the_unix_clock_keeps_events_nested_and_hostile_events_are_made_to_nest() {
    let tmp = tempfile::tempdir().unwrap();
    // A span that ends when its step ends, both at fractions of a microsecond (what the
    // hostile review saw end 0.2 µs after its step); one that crosses its parent's end; one
    // with a negative duration, one of another pid.
    let mut trace = trace_of(
        100,
        1_700_000_000.123_456,
        &[
            (1000.002, 500.0),
            (1000.126, 499.876),
            (1200.0, 900.0),
            (1300.0, -3.0),
        ],
    );
    trace
        .trace_events
        .push(event("X", "other", 1100.0, Some(1.0), 999, 7));
    one_process(tmp.path(), 100, &trace);
    let (x, stderr) = merged_x(tmp.path());
    assert!(
        stderr.contains("pid 100: 2 event(s) without a time or a duration left out"),
        "{stderr}"
    );
    assert_eq!(x.len(), 3, "{x:?}");
    let (step, inner, crossing) = (x[0], x[1], x[2]);
    assert!(inner.0 >= step.0 && inner.1 <= step.1, "{x:?}");
    assert!(
        crossing.1 <= step.1 && crossing.2,
        "cut at its parent's end: {x:?}"
    );
    assert!(!inner.2 && !step.2);
}

#[test]
fn trace_refuses_to_write_over_the_runs_files_and_says_why_nothing_could_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    one_process(tmp.path(), 100, &trace_of(100, 1.7e9, &[(0.0, 1.0)]));
    let target = tmp.path().join(format::trace_file_name(100));
    let before = std::fs::read(&target).unwrap();
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("would replace one of the run's own files"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), before);

    std::fs::write(&target, b"{not json").unwrap();
    let out_file = tmp.path().join("run.json");
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("no trace of run r could be read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pid 100 left out:") && stderr.contains("is not a report"),
        "{stderr}"
    );
    assert!(!out_file.exists());
}

#[test]
fn trace_follows_a_link_it_is_told_to_write_and_never_over_the_runs_files() {
    let tmp = tempfile::tempdir().unwrap();
    one_process(tmp.path(), 100, &trace_of(100, 1.7e9, &[(0.0, 1.0)]));
    let elsewhere = tempfile::tempdir().unwrap();
    let trace = |out: &std::path::Path| {
        cli(&[
            "trace".as_ref(),
            tmp.path().as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
    };
    // A link to one of the run's own files: refused, the file as it was.
    let own = tmp.path().join(format::trace_file_name(100));
    let before = std::fs::read(&own).unwrap();
    let sneaky = elsewhere.path().join("out.json");
    std::os::unix::fs::symlink(&own, &sneaky).unwrap();
    let out = trace(&sneaky);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would replace one of the run's own files")
    );
    assert_eq!(std::fs::read(&own).unwrap(), before);
    // A link elsewhere: the file it names gets the trace, and the link stays a link.
    let real = elsewhere.path().join("real.json");
    std::fs::write(&real, b"old").unwrap();
    let link = elsewhere.path().join("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let out = trace(&link);
    assert!(out.status.success(), "{out:?}");
    let written: Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert!(written["traceEvents"].is_array(), "{written}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // A device is written into, not replaced.
    let out = trace(std::path::Path::new("/dev/null"));
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // `--html` on one of the run's own files is refused too.
    let out = cli(&[
        "report".as_ref(),
        tmp.path().as_os_str(),
        "--html".as_ref(),
        own.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read(&own).unwrap(), before);
}

#[test]
fn trace_to_dev_stdout_goes_into_the_pipe_or_appends_to_the_redirected_file() {
    let tmp = tempfile::tempdir().unwrap();
    one_process(tmp.path(), 100, &trace_of(100, 1.7e9, &[(0.0, 1.0)]));
    let args = [
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        "/dev/stdout".as_ref(),
    ];
    // A pipe: the trace alone on stdout, the "wrote" line on stderr.
    let out = cli(&args);
    assert!(out.status.success(), "{out:?}");
    let trace: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(trace["traceEvents"].is_array());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote /dev/stdout: run r"));
    // `>> log`: appended after what the log held, in the same file.
    let log = tmp.path().join("log.txt");
    std::fs::write(&log, b"PRIOR\n").unwrap();
    let appended = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_vllm-profiler"))
        .args(args)
        .stdout(appended)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let json = text.strip_prefix("PRIOR\n").expect("the log's line kept");
    let trace: Value = serde_json::from_str(json).unwrap();
    assert!(trace["traceEvents"].is_array());
}

#[test]
fn two_devices_of_one_index_are_two_tracks_and_a_device_without_uuid_is_not_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    for (pid, uuid) in [(100, Some("GPU-A")), (101, Some("GPU-B")), (102, None)] {
        one_process(tmp.path(), pid, &trace_of(pid, 1.7e9, &[(0.0, 1.0)]));
        let mut h = history(pid, 2 + pid as usize - 100, 1.7e9);
        h.devices[0].uuid = uuid.map(str::to_owned);
        if uuid.is_none() {
            h.devices.clear(); // a process that saw its device without a UUID
        }
        write(tmp.path(), format::gpu_history_file_name(pid), &h);
    }
    let out_file = tmp.path().join("merged.json");
    let out = cli(&[
        "trace".as_ref(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        out_file.as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let merged: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let mut tracks: BTreeMap<String, usize> = BTreeMap::new();
    for e in merged["traceEvents"].as_array().unwrap() {
        if e["ph"] == "C" && e["name"].as_str().unwrap().contains("utilization") {
            *tracks
                .entry(e["name"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        tracks,
        BTreeMap::from([
            ("GPU 0 GPU-A utilization (%)".to_owned(), 2),
            ("GPU 0 GPU-B utilization (%)".to_owned(), 3),
        ])
    );
}
