//! The crash-safe journal, driven directly: what a session journals is what a session rebuilt
//! from it reports, file for file; a torn tail loses only its last batch; empty steps stay out
//! of every duration.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use vllm_profiler_core::journal;
use vllm_profiler_core::kernel_inbox::KernelLaunch;
use vllm_profiler_core::{recover, Session, Settings};
use vllm_profiler_format::{self as format, Role};

const PID: u32 = 777_001;

fn journaled(dir: &Path) -> Arc<Session> {
    let session = Session::new(
        PID,
        1,
        Settings {
            output_dir: dir.to_path_buf(),
            max_history: 50,
            journal: true,
            ..Settings::default()
        },
    );
    session.set_run("run-7".to_owned(), 4242);
    session
}

fn host(t: f64) -> format::HostSample {
    format::HostSample {
        timestamp: t,
        process_cpu_percent: Some(12.5),
        process_rss_mb: Some(300.25),
        host_memory_used_mb: Some(1000.0),
        host_memory_total_mb: Some(4000.0),
    }
}

fn gpu(t: f64, device_id: u32) -> format::GpuSample {
    format::GpuSample {
        timestamp: t,
        device_id,
        gpu_utilization: Some(40.0 + f64::from(device_id)),
        memory_used_mb: Some(1234.5),
        ..format::GpuSample::default()
    }
}

/// A collector turn, as the agent's thread takes it: a compaction's snapshot written at once.
fn collect(s: &Session) {
    let turn = s.collect();
    assert_eq!(turn.failure, None);
    if let Some(job) = turn.job {
        job.run();
    }
}

fn recovered(dir: &Path) -> vllm_profiler_core::Recovered {
    recover(dir, PID, false)
        .unwrap()
        .expect("no process runs with the test's pid")
}

/// The steps that did work in the reports recover makes of `dir`.
fn recovered_steps(dir: &Path) -> u64 {
    recovered(dir).session.summary(None).unwrap().total_steps
}

/// Steps with nested spans, empty steps, a span outside any step, samples and a role, with a
/// journal write (`collect`) after each round, as the collector thread does.
fn record(s: &Arc<Session>, rounds: u32) {
    s.describe_devices(
        "NVMLDetector",
        vec![format::GpuDevice {
            index: 0,
            name: Some("Fake GPU".into()),
            uuid: Some("GPU-1".into()),
            gpu_type: "nvidia".into(),
            memory_total_mb: Some(8192.0),
        }],
    );
    s.set_identity(Role::Worker, Some(1));
    let mut rec = s.register_thread(11);
    for round in 0..rounds {
        for i in 0..7u32 {
            let step = rec.step_begin(0, 0).unwrap();
            if i == 3 {
                // Nothing scheduled: an empty step.
                rec.step_end(step).unwrap();
                continue;
            }
            rec.step_set_counts(step, 1 + i, 10 * (i + 1)).unwrap();
            rec.step_set_engine_step(step, u64::from(round * 7 + i))
                .unwrap();
            let outer = rec.span_begin(b"model.layers.0").unwrap();
            let inner = rec.span_begin(b"model.layers.0.mlp").unwrap();
            let context = rec.kernel_context();
            rec.span_end_annotated(inner, 1.5, Some(br#"{"input_shapes":[[2,64]]}"#))
                .unwrap();
            // One kernel before its step ends, one after: both journaled into it.
            let kernel = |start_ns: u64| KernelLaunch {
                context,
                name: s.interner().intern(b"gemm_kernel").unwrap(),
                launch: s.shapes().intern(br#"{"grid":[1,1,1]}"#).unwrap(),
                device: 0,
                stream: 3,
                from_graph: i == 2,
                start_ns,
                duration_ns: 1_000 * u64::from(i + 1),
            };
            s.record_kernels(&[kernel(10)]);
            rec.span_end(outer).unwrap();
            rec.step_end(step).unwrap();
            s.record_kernels(&[kernel(5_000)]);
        }
        // A torch profiler window of the round's steps (the sender's clock is its own).
        let window = serde_json::json!({
            "now_ns": 10_000, "start_ns": 9_000, "end_ns": 9_500, "steps": [],
            "ops": [{"name": "aten::mm", "calls": 3, "host_ns": 900, "self_host_ns": 600}],
            "events": [{"name": "aten::mm", "start_ns": 9_200, "duration_ns": 100}],
        });
        (rec.record_torch_op_window_json(window.to_string().as_bytes())).unwrap();
        let free = rec
            .span_begin(format!("outside.{round}").as_bytes())
            .unwrap();
        rec.span_end(free).unwrap();
        let t = 1_700_000_000.0 + f64::from(round);
        s.record_samples(host(t), &[gpu(t, 0), gpu(t, 1)]);
        collect(s);
    }
}

/// The report files of `pid` in `dir` as JSON, without what differs by when they were made
/// (the export's stamp: checked to be one for the set, and returned).
fn reports(dir: &Path, pid: u32) -> Vec<(String, Value)> {
    reports_and_stamp(dir, pid).0
}

fn reports_and_stamp(dir: &Path, pid: u32) -> (Vec<(String, Value)>, format::ExportStamp) {
    let mut files = Vec::new();
    let mut stamps = Vec::new();
    for name in [
        format::summary_file_name(pid),
        format::detailed_steps_file_name(pid),
        format::gpu_history_file_name(pid),
        format::trace_file_name(pid),
    ] {
        let text =
            std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut json: Value = serde_json::from_str(&text).unwrap();
        json.as_object_mut().unwrap().remove("generated_at");
        let stamp = match json.get_mut("otherData") {
            Some(other) => {
                let other = other.as_object_mut().unwrap();
                let sequence = other.remove(format::ExportStamp::TRACE_SEQUENCE).unwrap();
                let at = other.remove(format::ExportStamp::TRACE_AT).unwrap();
                serde_json::json!({"sequence": sequence, "at": at})
            }
            None => json.as_object_mut().unwrap().remove("export").unwrap(),
        };
        stamps.push(serde_json::from_value::<format::ExportStamp>(stamp).unwrap());
        files.push((name, json));
    }
    assert!(stamps.iter().all(|s| *s == stamps[0]), "{stamps:?}");
    (files, stamps[0])
}

#[test]
fn the_reports_of_one_export_share_its_stamp_and_the_next_export_counts_on() {
    let dir = tempfile::tempdir().unwrap();
    let live = journaled(dir.path());
    record(&live, 2);
    live.export(dir.path()).unwrap();
    let (_, first) = reports_and_stamp(dir.path(), PID);
    assert_eq!(first.sequence, 1);
    // A summary asked for through the API belongs to no set.
    assert_eq!(live.summary(None).unwrap().export, None);
    live.export(dir.path()).unwrap();
    let (_, second) = reports_and_stamp(dir.path(), PID);
    assert_eq!(second.sequence, 2);
    assert!(second.at >= first.at);
    // One file of the first set put back beside the second: a reader sees the mix.
    let summary = dir.path().join(format::summary_file_name(PID));
    let mut old: format::PerformanceSummary =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    old.export = Some(first);
    std::fs::write(&summary, serde_json::to_vec(&old).unwrap()).unwrap();
    let stamps: Vec<_> = [
        format::summary_file_name(PID),
        format::detailed_steps_file_name(PID),
    ]
    .iter()
    .map(|name| {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap();
        serde_json::from_value::<format::ExportStamp>(json["export"].clone()).unwrap()
    })
    .collect();
    assert_eq!(stamps, [first, second], "a reader sees the mix");
}

fn process_name_event(trace: &mut Value) {
    // Named by role; the live process labels itself by its comm, the rebuilt one by the
    // journal's: the same.
    let events = trace["traceEvents"].as_array().unwrap();
    let named = |kind: &str| {
        events
            .iter()
            .filter(|e| e["name"] == kind)
            .map(|e| e["args"]["name"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(named("process_name"), [Value::from("worker rank 1")]);
    assert_eq!(named("process_labels").len(), 1);
}

#[test]
fn a_rebuilt_session_reports_what_the_live_one_would() {
    let journal_dir = tempfile::tempdir().unwrap();
    let live = journaled(journal_dir.path());
    record(&live, 12);
    assert!(journal_dir
        .path()
        .join(journal::snapshot_file_name(PID))
        .is_file());

    // The live session holds the journal's lock: it is left alone.
    assert!(recover(journal_dir.path(), PID, false).unwrap().is_none());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    live.export(a.path()).unwrap();
    // Gone as a SIGKILL would take it: nothing written at its end, the lock let go.
    drop(live);

    let recovered = recovered(journal_dir.path());
    assert_eq!(recovered.writer.pid, PID);
    assert!(!recovered.writer.is_running(), "no process has pid {PID}");
    assert_eq!(recovered.stopped, None);
    assert_eq!(recovered.batches, 11);
    recovered.session.close_and_export(b.path()).unwrap();
    let (mut live_files, mut rebuilt) = (reports(a.path(), PID), reports(b.path(), PID));
    process_name_event(&mut live_files[3].1);
    process_name_event(&mut rebuilt[3].1);
    for ((name, x), (_, y)) in live_files.iter().zip(&rebuilt) {
        assert_eq!(x, y, "{name} differs");
    }
    let summary = &live_files[0].1;
    assert_eq!(summary["total_steps"], 12 * 6);
    assert_eq!(summary["empty_steps"], 12);
    assert_eq!(summary["role"], "worker");
    assert_eq!(summary["rank"], 1);
    // The run, kept by the journal (the rebuilt reports equal these).
    assert_eq!(summary["run_id"], "run-7");
    assert_eq!(summary["parent_pid"], 4242);
    assert_eq!(live_files[3].1["otherData"]["run_id"], "run-7");
    assert_eq!(summary["counters"]["total_spans"], 12 * 13);
    let steps = live_files[1].1["detailed_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 50, "the history bound");
    assert_eq!(steps.last().unwrap()["engine_step"], 11 * 7 + 6);
    assert_eq!(summary["counters"]["kernel_records"], 12 * 6 * 2);
    assert_eq!(
        summary["kernel_performance"]["gemm_kernel"]["graph_launches"],
        12 * 2
    );
    assert!(steps.iter().all(|s| s["kernel_count"] == 2), "{steps:?}");
    let samples = live_files[2].1["gpu_history"].as_array().unwrap();
    assert_eq!(samples.len(), 24);
    assert_eq!(summary["counters"]["torch_op_windows"], 12);
    assert_eq!(
        summary["torch_op_performance"]["aten::mm"]["call_count"],
        12 * 3
    );
    assert_eq!(summary["torch_op_windows"].as_array().unwrap().len(), 12);
}

#[test]
fn a_torn_last_batch_loses_only_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let live = journaled(dir.path());
    record(&live, 5);
    drop(live);
    let log = dir.path().join(journal::log_file_name(PID));
    let whole = std::fs::read(&log).unwrap();
    let steps_of = |path: &Path| {
        let got = recovered(path);
        let summary = got.session.summary(None).unwrap();
        (summary.total_steps, got.batches, got.stopped.is_some())
    };
    // The first write is the snapshot (with the first round), then one batch per round.
    assert_eq!(steps_of(dir.path()), (30, 4, false));
    // Cut inside the last frame: the batches before it are read back, the cut is said.
    for cut in [whole.len() - 1, whole.len() - 5, whole.len() - 40] {
        std::fs::write(&log, &whole[..cut]).unwrap();
        assert_eq!(steps_of(dir.path()), (24, 3, true), "cut at {cut}");
    }
    // A flipped byte in the last batch: the same.
    let mut damaged = whole.clone();
    let at = damaged.len() - 3;
    damaged[at] ^= 0x40;
    std::fs::write(&log, &damaged).unwrap();
    assert_eq!(steps_of(dir.path()), (24, 3, true));
    // No log at all (a kill between the snapshot and the log): the snapshot alone.
    std::fs::remove_file(&log).unwrap();
    let got = recovered(dir.path());
    assert_eq!(got.batches, 0);
    assert_eq!(got.session.summary(None).unwrap().total_steps, 6);
}

#[test]
fn a_new_output_dir_moves_the_journal_and_the_final_export_removes_it() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let live = journaled(first.path());
    record(&live, 2);
    let files = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let journal_files = [
        journal::lock_file_name(PID),
        journal::log_file_name(PID),
        journal::snapshot_file_name(PID),
    ];
    assert_eq!(files(first.path()), journal_files);
    live.set_settings(Settings {
        output_dir: second.path().to_path_buf(),
        ..live.settings()
    });
    record(&live, 1);
    assert_eq!(files(first.path()), Vec::<String>::new());
    assert_eq!(files(second.path()), journal_files);
    let forced = recover(second.path(), PID, true).unwrap().unwrap();
    assert_eq!(forced.session.summary(None).unwrap().total_steps, 18);
    forced.remove_journal(); // forced over a running writer: the journal stays
    assert_eq!(files(second.path()), journal_files);
    live.close_and_export(second.path()).unwrap();
    let left = files(second.path());
    assert!(
        left.iter().all(|name| !name.starts_with("journal_")),
        "{left:?}"
    );
    assert_eq!(left.len(), 4, "{left:?}");
    // Closed: nothing is journaled again.
    collect(&live);
    assert_eq!(files(second.path()).len(), 4);
}

#[test]
fn a_session_that_recorded_nothing_writes_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let s = journaled(dir.path());
    s.record_samples(host(1.0), &[]);
    collect(&s);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn empty_steps_are_counted_apart_and_kept_out_of_durations() {
    let dir = tempfile::tempdir().unwrap();
    let clock = vllm_profiler_core::ManualClock::new(1_700_000_000.0);
    let s = Session::with_clock(
        PID,
        1,
        Settings::default(),
        vllm_profiler_core::Clock::Manual(clock.clone()),
    );
    let mut rec = s.register_thread(1);
    for _ in 0..3 {
        let step = rec.step_begin(0, 0).unwrap();
        clock.advance_ms(30);
        rec.step_end(step).unwrap();
    }
    let step = rec.step_begin(2, 8).unwrap();
    rec.step_end(step).unwrap();
    let summary = s.summary(None).unwrap();
    assert_eq!((summary.total_steps, summary.empty_steps), (1, 3));
    assert!(summary.max_duration_ms.unwrap() < 30.0, "{summary:?}");
    assert_eq!(summary.counters.kept_steps, 1);
    s.export(dir.path()).unwrap();
    let steps: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(format::detailed_steps_file_name(PID))).unwrap(),
    )
    .unwrap();
    assert_eq!(steps["detailed_steps"].as_array().unwrap().len(), 1);
    assert_eq!(steps["detailed_steps"][0]["step_id"], 0);
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn compactions_go_on_beside_the_collector_and_lose_nothing_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let live = journaled(dir.path());
    record(&live, 3);
    live.set_journal_limit(1);
    // A turn that starts a compaction hands its snapshot back; until it is written, batches
    // go to both logs, and a kill at that moment recovers from the old pair.
    let mut rec = live.register_thread(12);
    let mut step_and_turn = |n: u32| {
        let step = rec.step_begin(1, n).unwrap();
        rec.step_end(step).unwrap();
        live.collect()
    };
    let turn = step_and_turn(1);
    let job = turn
        .job
        .expect("the log passed its limit: a compaction starts");
    assert_eq!(turn.failure, None);
    assert!(names_in(dir.path()).contains(&journal::next_log_file_name(PID)));
    let turn = step_and_turn(2);
    assert!(turn.job.is_none(), "one compaction at a time");
    let copy = tempfile::tempdir().unwrap();
    let copy_of = |from: &Path| {
        for name in names_in(from) {
            std::fs::copy(from.join(&name), copy.path().join(&name)).unwrap();
        }
        let got = recover(copy.path(), PID, true).unwrap().unwrap();
        got.session.summary(None).unwrap().total_steps
    };
    assert_eq!(
        copy_of(dir.path()),
        18 + 2,
        "before the new snapshot: the old pair"
    );
    job.run();
    assert_eq!(
        copy_of(dir.path()),
        18 + 2,
        "between the two renames: the new snapshot and .next"
    );
    step_and_turn(3); // the new log goes in place
    let names = names_in(dir.path());
    assert!(
        !names.contains(&journal::next_log_file_name(PID)),
        "{names:?}"
    );
    assert_eq!(copy_of(dir.path()), 18 + 3);
    drop(rec);
    drop(live);
    assert_eq!(recovered_steps(dir.path()), 21);
}

#[test]
fn journal_files_removed_under_a_running_process_are_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let live = journaled(dir.path());
    record(&live, 2);
    for name in names_in(dir.path()) {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    record(&live, 1);
    assert_eq!(
        names_in(dir.path()).len(),
        3,
        "lock, snapshot and log again"
    );
    drop(live);
    assert_eq!(recovered_steps(dir.path()), 18);
}

#[test]
fn a_dead_journal_of_the_same_pid_is_replaced_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let first = journaled(dir.path());
    record(&first, 1);
    drop(first); // died unrecovered
    let second = journaled(dir.path());
    second.describe_devices("CPUDetector", Vec::new());
    let mut rec = second.register_thread(3);
    let step = rec.step_begin(1, 1).unwrap();
    rec.step_end(step).unwrap();
    let turn = second.collect();
    let note = turn
        .note
        .expect("one line says the old journal is replaced");
    assert!(note.contains("never recovered"), "{note}");
    assert!(second.collect().note.is_none(), "said once");
}

#[test]
fn a_damaged_journal_is_refused_with_a_reason_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let live = journaled(dir.path());
    record(&live, 2);
    drop(live);
    let log = dir.path().join(journal::log_file_name(PID));
    // A frame with a good CRC whose batch does not decode: the log ends there.
    let mut bad = std::fs::read(&log).unwrap();
    let payload = vec![7u8; 40];
    bad.extend((payload.len() as u32).to_le_bytes());
    bad.extend(crc32fast::hash(&payload).to_le_bytes());
    bad.extend(&payload);
    std::fs::write(&log, &bad).unwrap();
    let got = recovered(dir.path());
    assert!(
        got.stopped.is_some(),
        "a batch that does not decode ends the log"
    );
    assert_eq!(got.session.summary(None).unwrap().total_steps, 12);
    drop(got); // its hold on the journal
               // A snapshot of garbage: an error naming the journal.
    std::fs::write(
        dir.path().join(journal::snapshot_file_name(PID)),
        vec![0x55; 4096],
    )
    .unwrap();
    let err = recover(dir.path(), PID, false).err().expect("refused");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    assert!(
        err.to_string().contains(&journal::snapshot_file_name(PID)),
        "{err}"
    );
}

#[test]
fn the_final_export_journals_the_tail_first_so_a_kill_during_it_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = journaled(dir.path());
    record(&live, 2);
    // Five more steps, ended but never handed to the journal by a collector turn.
    let mut rec = live.register_thread(12);
    for _ in 0..5 {
        let step = rec.step_begin(1, 4).unwrap();
        rec.step_end(step).unwrap();
    }
    // The final export fails (as if killed) after its journal turn: its dir is a file.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"").unwrap();
    assert!(live.close_and_export(&blocked).is_err());
    drop((rec, live));
    assert_eq!(recovered_steps(dir.path()), 2 * 6 + 5);
}
