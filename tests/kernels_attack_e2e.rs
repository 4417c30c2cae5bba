//! Attacks on the CUDA kernel tracer, as a hostile host or environment would make them: the
//! real agent preloaded in C drivers (`tests/data/kernel_attack.c`, and `kernel_launches.c`'s
//! `refused` mode), kernels made by the fake CUPTI (`crates/fake-cupti`) as it is. Each test
//! asserts the behaviour the agent promises: no crash, no hang, the host's exit status and
//! stdout untouched, every kernel it claims to have in the reports, every loss counted.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

fn attack_program(dir: &Path) -> PathBuf {
    compile_c(&workspace_root().join("tests/data/kernel_attack.c"), dir)
}

fn command(exe: &Path, dir: &Path, script: &str) -> std::process::Command {
    let mut cmd = profiled_command(exe, &dir.join("reports"));
    cmd.env("VLLM_PROFILING_KERNELS", "1")
        .env("VLLM_PROFILING_CUPTI_LIBRARY", fake_cupti_library())
        .env("FAKE_CUPTI_PATH", fake_cupti_library())
        .env("FAKE_CUPTI_SCRIPT", script)
        .env_remove("CUDA_INJECTION64_PATH")
        .env_remove("NSYS_PROFILING_SESSION_ID");
    cmd
}

fn attack<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S], script: &str) -> Finished {
    let exe = attack_program(dir);
    let mut cmd = command(&exe, dir, script);
    cmd.args(args);
    run(&mut cmd, LIMIT)
}

/// The numbers of the driver's one stdout line, `done A B ...`; the stdout must be that line.
fn done(finished: &Finished) -> Vec<u64> {
    let line = finished
        .stdout
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("done "))
        .unwrap_or_else(|| {
            panic!(
                "the host's stdout is not its own line: {:?}",
                finished.stdout
            )
        });
    assert!(!line.contains('\n'), "stdout: {:?}", finished.stdout);
    line.split(' ').map(|n| n.parse().unwrap()).collect()
}

/// What these tests read of a process's reports: its summary. Not the four files: the GPU
/// history is written only once the sampler took a sample, which a driver that ends within
/// milliseconds on a loaded machine may never give it.
struct KernelReports {
    summary: vllm_profiler_format::PerformanceSummary,
}

fn reports(dir: &Path, pid: u32) -> KernelReports {
    let path = dir
        .join("reports")
        .join(vllm_profiler_format::summary_file_name(pid));
    KernelReports {
        summary: serde_json::from_value(read_json(&path)).expect("summary schema"),
    }
}

fn calls(reports: &KernelReports, name: &str) -> u64 {
    reports
        .summary
        .kernel_performance
        .as_ref()
        .and_then(|k| k.get(name))
        .map_or(0, |k| k.call_count)
}

// ---- hostile kernel names -------------------------------------------------------------------

/// A mangled name of `levels` function parameters, each `P<prev, prev>` of the one before, by
/// substitution: about 10 bytes a level, and a demangled text twice as long each level
/// (Itanium substitutions are back-references; the output is exponential in the input).
fn demangler_bomb(levels: usize) -> String {
    fn sub(i: usize) -> String {
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        if i == 0 {
            return "S_".into();
        }
        let (mut n, mut s) = (i - 1, Vec::new());
        loop {
            s.insert(0, DIGITS[n % 36]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        format!("S{}_", String::from_utf8(s).unwrap())
    }
    // Substitutions: 0 = P, 1 = X, 2 = P<X, X>.
    let mut name = String::from("_Z1f1PI1XS0_E");
    for k in 0..levels {
        let i = 2 + k;
        name.push_str(&format!("{}I{}{}E", sub(0), sub(i), sub(i)));
    }
    name
}

/// A 450-byte kernel name (40 levels: 2^40 bytes demangled) once stalled the tracer thread in
/// `cpp_demangle`, which demangled the whole symbol before it was cut to 1024 bytes; the
/// demangler now writes into a capped writer that ends it at 1024 bytes.
#[test]
fn a_demangler_bomb_neither_stalls_the_tracer_nor_loses_the_other_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = demangler_bomb(40);
    assert!(bomb.len() < 600);
    let started = Instant::now();
    let finished = attack(
        tmp.path(),
        &["names", "before_bomb", &bomb, "after_bomb"],
        "{}",
    );
    let took = started.elapsed();
    assert_success(&finished);
    assert_eq!(done(&finished), [4]);
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(
        (
            calls(&r, "before_bomb"),
            calls(&r, "after_bomb"),
            calls(&r, "last_kernel")
        ),
        (1, 1, 1),
        "kernels lost around a hostile name (run took {took:?}); counters {:?}, kernels {:?}",
        r.summary.counters,
        r.summary
            .kernel_performance
            .as_ref()
            .map(|k| k.keys().cloned().collect::<Vec<_>>())
    );
    assert_eq!(r.summary.counters.kernel_records, 4);
}

/// Very long, non-UTF-8, empty, deeply nested and garbage mangled names: each kernel is
/// reported, named within the 1024-byte limit, lossy where it is not UTF-8.
#[test]
fn hostile_kernel_names_are_reported_cut_and_lossy() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "a".repeat(100_000);
    let nested = format!("_Z1f{}i", "P".repeat(20_000));
    let garbage = format!("_Z{}", "Z".repeat(5_000));
    let templates = format!("_Z1fI{}E", "I".repeat(5_000));
    let args: Vec<std::ffi::OsString> = vec![
        "names".into(),
        long.clone().into(),
        std::ffi::OsStr::from_bytes(b"\xff\xfe_kernel\x80").to_owned(),
        "".into(),
        nested.into(),
        garbage.into(),
        templates.into(),
    ];
    let finished = attack(tmp.path(), &args, "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [7]);
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(r.summary.counters.kernel_records, 7);
    let kernels = r.summary.kernel_performance.as_ref().expect("kernels");
    assert_eq!(
        kernels.values().map(|k| k.call_count).sum::<u64>(),
        7,
        "{:?}",
        kernels.keys()
    );
    assert!(
        kernels.keys().all(|name| name.len() <= 1024),
        "a name past the limit"
    );
    assert_eq!(calls(&r, &long[..1024]), 1, "{:?}", kernels.keys());
    assert_eq!(
        calls(&r, "\u{fffd}\u{fffd}_kernel\u{fffd}"),
        1,
        "{:?}",
        kernels.keys()
    );
    assert_eq!(calls(&r, "(unnamed)"), 1, "{:?}", kernels.keys());
    assert_eq!(calls(&r, "last_kernel"), 1);
}

/// Thousands of distinct names: every kernel counted, in its name or in "(other kernels)".
#[test]
fn thousands_of_distinct_kernel_names_are_all_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 5000u64;
    let finished = attack(tmp.path(), &["distinct", &n.to_string()], "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [n]);
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(r.summary.counters.kernel_records, n);
    let kernels = r.summary.kernel_performance.as_ref().expect("kernels");
    assert_eq!(kernels.values().map(|k| k.call_count).sum::<u64>(), n);
}

// ---- volume ---------------------------------------------------------------------------------

/// 400,000 launches from 4 threads at once, far past the 16 MiB pool between two drains:
/// what CUPTI wrote into our buffers is all reported (or counted lost), what it dropped is
/// counted, memory stays bounded.
fn burst(script: &str, idle_ms: &str) -> (Finished, KernelReports, u64, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["burst", "4", "100000", idle_ms], script);
    assert_success(&finished);
    let counts = done(&finished);
    let (launched, written) = (counts[0], counts[1]);
    let r = reports(tmp.path(), finished.pid);
    (finished, r, launched, written)
}

/// Under CPU contention (beside another burst, `--test-threads=2`), a final export that waited
/// 500 ms for the tracer once left 10-25k written kernel records out, counted nowhere; it now
/// waits up to 2 s, and says so if that was not enough.
#[test]
fn a_burst_past_the_pool_is_dropped_and_counted_and_nothing_else_is_lost() {
    let (finished, r, launched, written) = burst("{}", "0");
    assert_eq!(finished.stderr, "");
    let c = &r.summary.counters;
    eprintln!(
        "burst: launched {launched}, written {written}, reported {}, dropped {}, lost {}",
        c.kernel_records, c.dropped_kernel_records, c.lost_kernel_records
    );
    assert_eq!(
        c.kernel_records + c.lost_kernel_records,
        written,
        "every kernel record CUPTI wrote reaches the reports or is counted lost"
    );
    assert!(
        c.dropped_kernel_records >= launched - written,
        "CUPTI dropped {} kernel records, {} counted",
        launched - written,
        c.dropped_kernel_records
    );
    assert_eq!(calls(&r, "burst_kernel"), c.kernel_records);
}

/// The same burst, with 3 s for the tracer to drain before the exit: nothing written is lost.
#[test]
fn a_burst_with_time_to_drain_loses_nothing_written() {
    let (_, r, _, written) = burst("{}", "3000");
    let c = &r.summary.counters;
    assert_eq!(c.kernel_records + c.lost_kernel_records, written);
}

/// cuptiActivityGetNumDroppedRecords failing: the drops cannot be counted, and one warning
/// says so (it was once silent).
#[test]
fn a_failing_dropped_count_is_not_silent() {
    let script = r#"{"errors": {"cuptiActivityGetNumDroppedRecords": 999}}"#;
    let (finished, r, launched, written) = burst(script, "0");
    let c = &r.summary.counters;
    assert_eq!(c.kernel_records + c.lost_kernel_records, written);
    if written < launched {
        assert!(
            c.dropped_kernel_records > 0 || !finished.stderr.is_empty(),
            "{} kernel records dropped by CUPTI, none counted and no warning",
            launched - written
        );
    }
}

/// cuptiActivityFlushAll failing: no buffer comes back, and one warning says kernels may be
/// missing (it was once silent).
#[test]
fn a_failing_flush_is_not_silent() {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"{"errors": {"cuptiActivityFlushAll": 999}}"#;
    let finished = attack(tmp.path(), &["names", "flushed_kernel"], script);
    assert_success(&finished);
    assert_eq!(done(&finished), [2]);
    let r = reports(tmp.path(), finished.pid);
    let c = &r.summary.counters;
    assert!(
        c.kernel_records == 2 || !finished.stderr.is_empty(),
        "2 kernels launched, {} reported, {} dropped, {} lost, stderr {:?}",
        c.kernel_records,
        c.dropped_kernel_records,
        c.lost_kernel_records,
        finished.stderr
    );
}

// ---- pause and resume -----------------------------------------------------------------------

/// 4 threads launching in steps and spans while 4 others pause and resume as fast as they can.
#[test]
fn pausing_and_resuming_from_many_threads_while_launching_neither_crashes_nor_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["storm"], "{}");
    assert_success(&finished);
    let launched = done(&finished)[0];
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(calls(&r, "after_storm"), 3, "{:?}", r.summary.counters);
    assert!(calls(&r, "storm_kernel") <= launched);
    assert!(r.summary.counters.kernel_records <= launched + 3);
}

/// Pause and resume, 100 times, before anything is recorded: no-ops that return 0.
#[test]
fn pause_and_resume_before_profiling_starts_are_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["prepause"], "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [3]);
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(calls(&r, "after_prepause"), 3);
}

/// Pause and resume where kernels are not traced at all (no VLLM_PROFILING_KERNELS).
#[test]
fn pause_and_resume_without_kernel_tracing_return_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(
        &workspace_root().join("tests/data/kernel_launches.c"),
        tmp.path(),
    );
    let mut cmd = command(&exe, tmp.path(), "{}");
    cmd.env_remove("VLLM_PROFILING_KERNELS").arg("refused");
    let finished = run(&mut cmd, LIMIT);
    assert_success(&finished);
    assert_eq!(finished.stdout, "warmup 0\n");
    assert_eq!(finished.stderr, "");
}

/// A pause outlives a disable and an enable: the restarted tracer leaves CUPTI alone until
/// the resume, which takes it (both once went wrong: the tracer took CUPTI back at once, and
/// the resume then failed on its own subscription).
#[test]
fn a_pause_outlives_a_disable_and_enable_and_resume_works_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["pausecycle"], "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [3]);
    assert_eq!(finished.stderr, "");
}

// ---- the tracer's thread stopped and restarted; exits --------------------------------------

/// 5 disable/enable cycles, kernels launched in each: the tracer restarts each time.
#[test]
fn disable_and_enable_cycles_restart_the_tracer() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["cycle", "5"], "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [5]);
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    // One session across the cycles: the reports keep every cycle's kernels.
    assert_eq!(calls(&r, "final_kernel"), 5, "{:?}", r.summary.counters);
    assert_eq!(calls(&r, "cycle_kernel"), 25, "{:?}", r.summary.counters);
    assert_eq!(r.summary.counters.kernel_records, 30);
}

#[test]
fn kernels_launched_just_before_finish_and_exit_are_in_the_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["finish_exit"], "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [5]);
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(calls(&r, "before_exit"), 5);
}

#[test]
fn kernels_launched_just_before_a_normal_exit_are_in_the_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["exit_now"], "{}");
    assert_success(&finished);
    assert_eq!(done(&finished), [5]);
    assert_eq!(finished.stderr, "");
    let r = reports(tmp.path(), finished.pid);
    assert_eq!(calls(&r, "before_exit"), 5);
}

/// A fork while tracing: the child does not hang and does not report the parent's kernels;
/// the parent's kernels from before and after the fork are in its reports.
#[test]
fn a_fork_while_tracing_neither_hangs_nor_copies_the_parents_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = attack(tmp.path(), &["fork"], "{}");
    assert_success(&finished);
    let child = done(&finished)[0] as u32;
    eprintln!("fork: stderr {:?}", finished.stderr);
    let parent = reports(tmp.path(), finished.pid);
    assert_eq!(calls(&parent, "parent_before"), 3);
    assert_eq!(calls(&parent, "parent_after"), 3);
    let child = reports(tmp.path(), child);
    assert_eq!(child.summary.counters.kernel_records, 0);
    assert_eq!(child.summary.kernel_performance, None);
    assert!(
        finished.stderr.lines().count() <= 1,
        "{:?}",
        finished.stderr
    );
}

// ---- the library named by VLLM_PROFILING_CUPTI_LIBRARY ----------------------------------------

fn refused_with_library(library: &std::ffi::OsStr, script: &str) -> Finished {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(
        &workspace_root().join("tests/data/kernel_launches.c"),
        tmp.path(),
    );
    let mut cmd = command(&exe, tmp.path(), script);
    cmd.env("VLLM_PROFILING_CUPTI_LIBRARY", library)
        .arg("refused");
    let finished = run(&mut cmd, LIMIT);
    assert_success(&finished);
    assert_eq!(finished.stdout, "warmup 0\n");
    assert!(
        finished.stderr.lines().count() <= 1,
        "at most one warning: {:?}",
        finished.stderr
    );
    finished
}

#[test]
fn a_cupti_library_that_is_not_a_library_or_a_directory_or_too_long_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("libcupti.so.12");
    std::fs::write(&text, "not an ELF file\n".repeat(100)).unwrap();
    refused_with_library(text.as_os_str(), "{}");
    refused_with_library(tmp.path().as_os_str(), "{}");
    let long = format!("/{}", "x/".repeat(50_000));
    refused_with_library(std::ffi::OsStr::new(&long), "{}");
    refused_with_library(std::ffi::OsStr::new(""), "{}");
}

#[test]
fn a_cupti_library_without_cupti_symbols_is_named_once() {
    let finished = refused_with_library(agent_library().as_os_str(), "{}");
    assert!(
        finished.stderr.contains("CUDA kernels are not traced")
            && finished.stderr.contains("cuptiGetVersion"),
        "{:?}",
        finished.stderr
    );
    let finished = refused_with_library(std::ffi::OsStr::new("libm.so.6"), "{}");
    assert_eq!(finished.stderr.lines().count(), 1, "{:?}", finished.stderr);
}
