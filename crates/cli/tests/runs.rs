//! A dir of two server runs, written here with the format crate's types: `report` groups each
//! run's processes and names their roles, with each device once, and `compare` goes role by
//! role. The merged trace: `merged_trace.rs`.

mod common;

use common::*;
use vllm_profiler_format::{self as format, Comparison, PerformanceSummary, RunReport};

#[test]
fn report_groups_each_runs_processes_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    two_runs(tmp.path());
    let json = cli(&["report".as_ref(), tmp.path().as_os_str(), "--json".as_ref()]);
    assert!(json.status.success(), "{json:?}");
    let report: RunReport = serde_json::from_slice(&json.stdout).unwrap();
    let shape: Vec<(&str, Vec<(u32, &str)>)> = report
        .runs
        .iter()
        .map(|r| {
            let members = r
                .processes
                .iter()
                .map(|p| (p.pid, p.label.as_str()))
                .collect();
            (r.run_id.as_str(), members)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "a",
                vec![
                    (100, "api_server"),
                    (101, "engine_core"),
                    (102, "worker rank 0")
                ]
            ),
            (
                "b",
                vec![
                    (200, "engine_core"),
                    (201, "worker rank 0"),
                    (202, "worker rank 1")
                ]
            ),
        ]
    );
    // The device once, from the process that sampled it most.
    let gpus: Vec<(u32, usize)> = report.runs[1]
        .gpus
        .iter()
        .map(|g| (g.pid, g.samples))
        .collect();
    assert_eq!(gpus, [(201, 5)]);
    assert!(report.runs[0].gpus.is_empty());

    let text = cli(&["report".as_ref(), tmp.path().as_os_str()]);
    let text = String::from_utf8(text.stdout).unwrap();
    for line in [
        "Run a: 3 process(es)",
        "Run b: 3 process(es)",
        "GPUs of run b (each device once)",
        "Process 102 worker rank 0 (50 steps, 200 tokens)",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }
    assert_eq!(
        text.matches("GPU 0 Fake utilization %").count(),
        1,
        "{text}"
    );
}

#[test]
fn compare_goes_role_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    two_runs(&a); // its latest run: b
    two_runs(&b);
    // B's run b: the engine 50 % slower, worker rank 1 gone.
    let mut engine: PerformanceSummary =
        serde_json::from_slice(&std::fs::read(b.join(format::summary_file_name(200))).unwrap())
            .unwrap();
    engine.avg_duration_ms = Some(18.0);
    write(&b, format::summary_file_name(200), &engine);
    std::fs::remove_file(b.join(format::summary_file_name(202))).unwrap();
    let out = cli(&[
        "compare".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let c: Comparison = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((c.run_a.as_str(), c.run_b.as_str()), ("b", "b"));
    let roles: Vec<(&str, u32, u32, usize)> = c
        .roles
        .iter()
        .map(|r| (r.role.as_str(), r.pid_a, r.pid_b, r.regressions))
        .collect();
    assert_eq!(
        roles,
        [("engine_core", 200, 200, 1), ("worker rank 0", 201, 201, 0)]
    );
    assert_eq!(c.roles_only_in_a, ["worker rank 1"]);
    assert!(c.roles_only_in_b.is_empty());
    assert_eq!(c.regressions, 1);
}

#[test]
fn a_gpu_history_that_cannot_be_read_costs_its_figures_not_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    two_runs(tmp.path());
    std::fs::write(
        tmp.path().join(format::gpu_history_file_name(201)),
        b"{not json",
    )
    .unwrap();
    let out = cli(&["report".as_ref(), tmp.path().as_os_str(), "--json".as_ref()]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("pid 201: GPU figures left out:"),
        "{stderr}"
    );
    let report: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    // The device from the other process that saw it.
    let gpus: Vec<(u32, usize)> = report.runs[1]
        .gpus
        .iter()
        .map(|g| (g.pid, g.samples))
        .collect();
    assert_eq!(gpus, [(200, 2)]);
}
