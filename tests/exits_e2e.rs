//! End to end: how a profiled Python host ends (exit codes, exceptions, signals, `os._exit`,
//! `abort`) and how it makes processes (`os.fork` while another thread records,
//! `multiprocessing` with fork, spawn and forkserver). Every case runs the same script with
//! and without the agent preloaded: the exit status and stdout must be the same, the reports
//! present must parse, and nothing may hang (every process is killed after `LIMIT`).

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vllm_profiler_format as format;
use vllm_profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn script() -> PathBuf {
    workspace_root().join("tests/data/exits.py")
}

/// Runs `exits.py mode` without the agent, then with it (reporting into `out`, with `env`
/// added), and checks that the exit status and stdout (less the lines of pids) are the same.
/// Returns the profiled run.
fn run_both(mode: &str, out: &Path, env: &[(&str, &str)]) -> Finished {
    let mut plain = clean_command("python3");
    plain.arg(script()).arg(mode);
    let plain = run(&mut plain, LIMIT);
    let mut profiled = profiled_command("python3", out);
    profiled.arg(script()).arg(mode).envs(env.iter().copied());
    let profiled = run(&mut profiled, LIMIT);
    assert_eq!(
        (profiled.status.code(), profiled.status.signal()),
        (plain.status.code(), plain.status.signal()),
        "exit status changed by the agent\nprofiled stderr:\n{}\nplain stderr:\n{}",
        profiled.stderr,
        plain.stderr
    );
    assert_eq!(
        without_pids(&profiled.stdout),
        without_pids(&plain.stdout),
        "stdout changed by the agent; stderr:\n{}",
        profiled.stderr
    );
    profiled
}

/// `vllm-profiler recover dir`, which must succeed.
fn recover(dir: &Path) {
    let recovered = run(
        std::process::Command::new(cli_binary())
            .arg("recover")
            .arg(dir),
        LIMIT,
    );
    assert_success(&recovered);
}

fn without_pids(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("PIDS") && !l.starts_with("HELPERS"))
        .collect()
}

/// The pids listed on the stdout line starting with `tag`.
fn pids_on(stdout: &str, tag: &str) -> Vec<u32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("no {tag} line in {stdout:?}"))
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

/// The pids that have any report file (or temporary) in `dir`.
fn pids_with_files(dir: &Path) -> BTreeSet<u32> {
    file_names(dir)
        .iter()
        .map(|name| {
            let digits: String = name
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("a report file with no pid: {name}"))
        })
        .collect()
}

/// The four reports of `pid` parse with the format types; returns the batch sizes of its
/// kept steps.
fn steps_of(dir: &Path, pid: u32) -> Vec<u32> {
    let names = file_names(dir);
    let own: Vec<&String> = names
        .iter()
        .filter(|n| {
            !n.starts_with('.') && !n.starts_with("journal_") && n.contains(&format!("_{pid}."))
        })
        .collect();
    assert_eq!(own.len(), 4, "four reports of {pid}: {names:?}");
    let r = read_reports(dir, pid);
    assert_eq!(r.summary.pid, pid);
    assert_eq!(r.summary.total_steps, r.steps.detailed_steps.len() as u64);
    r.steps
        .detailed_steps
        .iter()
        .map(|s| s.batch_size)
        .collect()
}

/// Where an exit handler ran, no export was cut short: no temporary is left. (`os._exit`,
/// `abort` or a signal at its default action may cut a periodic export mid-write: that leaves
/// a temporary, never a half-written report.)
fn assert_no_temporaries(dir: &Path) {
    let names = file_names(dir);
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
}

/// A single-process case: the host's own files hold exactly the 5 steps it recorded.
fn check_all_five(out: &Path, pid: u32) {
    assert_eq!(pids_with_files(out), BTreeSet::from([pid]));
    assert_eq!(steps_of(out, pid), vec![1, 2, 3, 4, 5]);
}

#[test]
fn normal_exit_writes_the_final_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("normal", tmp.path(), &[]);
    assert_eq!(child.stdout, "done\n");
    assert_eq!(child.status.code(), Some(0));
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

#[test]
fn an_export_removes_the_temporaries_killed_writers_left() {
    let tmp = tempfile::tempdir().unwrap();
    let aged = std::time::SystemTime::now() - Duration::from_secs(60);
    // A writer killed mid-export (its lock went with it), and a file that is not ours.
    let left = tmp
        .path()
        .join(".detailed_steps_4000001.json.4000001.0.tmp");
    let foreign = tmp.path().join(".notes.tmp");
    for path in [&left, &foreign] {
        std::fs::File::create(path)
            .unwrap()
            .set_modified(aged)
            .unwrap();
    }
    let child = run_both("normal", tmp.path(), &[]);
    assert_eq!(child.status.code(), Some(0));
    assert!(!left.exists(), "{:?}", file_names(tmp.path()));
    assert!(foreign.exists());
    std::fs::remove_file(&foreign).unwrap();
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

#[test]
fn sys_exit_keeps_its_code_and_writes_the_final_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("sys-exit", tmp.path(), &[]);
    assert_eq!(child.status.code(), Some(3));
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

#[test]
fn uncaught_exception_keeps_exit_1_and_the_traceback() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("exception", tmp.path(), &[]);
    assert_eq!(child.status.code(), Some(1));
    assert!(
        child.stderr.contains("Traceback") && child.stderr.contains("RuntimeError: boom"),
        "{}",
        child.stderr
    );
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

#[test]
fn default_sigterm_adds_only_the_journal_s_tail_and_dies_by_it() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("sigterm-default", tmp.path(), &[]);
    assert_eq!(child.status.signal(), Some(libc::SIGTERM));
    assert_eq!(child.stderr, "", "nothing printed after the signal");
    // No report: the journal has everything, and `recover` writes the reports from it.
    let journal_only = |names: &[String]| {
        names
            .iter()
            .all(|n| n.starts_with(&format!("journal_{}.", child.pid)))
    };
    assert!(
        journal_only(&file_names(tmp.path())),
        "{:?}",
        file_names(tmp.path())
    );
    recover(tmp.path());
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

/// What a profiled process does after a default SIGTERM, syscall by syscall (strace): it
/// prints nothing and touches no file of its output dir but its own journal's, whose tail it
/// appends (or first snapshot it writes).
#[test]
fn after_a_default_sigterm_the_process_writes_only_to_its_journal() {
    if !which("strace") {
        missing_tool("this test traces the host with strace (Debian: apt-get install strace)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reports");
    let trace = tmp.path().join("trace.txt");
    let mut cmd = profiled_command("strace", &out);
    cmd.args(["-f", "-qq", "-y", "-s", "0", "-o"])
        .arg(&trace)
        .args(["-e", "trace=%file,%desc,%net"])
        .arg("python3")
        .arg(script())
        .arg("sigterm-default");
    let traced = run(&mut cmd, LIMIT * 2);
    assert_eq!(traced.stdout, "killing\n", "stderr:\n{}", traced.stderr);
    let text = std::fs::read_to_string(&trace).unwrap();
    let signal = text
        .find("--- SIGTERM")
        .unwrap_or_else(|| panic!("no SIGTERM in the trace:\n{text}"));
    let after = &text[signal..];
    let journal = file_names(&out)
        .into_iter()
        .find(|n| n.ends_with(".lock"))
        .unwrap_or_else(|| panic!("no journal in {:?}", file_names(&out)));
    let own = journal.trim_end_matches("lock");
    let dir = format!("{}/", out.display());
    for line in after.lines() {
        let call = line
            .split_once(' ')
            .map_or(line, |(_, call)| call.trim_start());
        assert!(
            !call.starts_with("write(1<") && !call.starts_with("write(2<"),
            "printed after the signal: {line}"
        );
        for (at, _) in line.match_indices(&dir) {
            let name = &line[at + dir.len()..];
            assert!(
                name.starts_with(own) || name.starts_with(&format!(".{own}")),
                "touched after the signal: {line}"
            );
        }
    }
    assert!(after.contains("+++ killed by SIGTERM +++"), "{after}");
}

#[test]
fn signals_the_host_blocks_wait_for_it_whatever_threads_the_agent_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("blocked-signals", tmp.path(), &[]);
    assert_eq!(child.status.code(), Some(0), "stderr:\n{}", child.stderr);
    assert_eq!(
        child.stdout,
        "pending ['SIGHUP', 'SIGTERM', 'SIGUSR1']\ntaken SIGHUP\ntaken SIGUSR1\ntaken SIGTERM\ndone\n"
    );
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

#[test]
fn a_host_reading_signals_through_signalfd_reads_them_all() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(
        &workspace_root().join("tests/data/signalfd_host.c"),
        tmp.path(),
    );
    let out = tmp.path().join("reports");
    let plain = run(&mut clean_command(&exe), LIMIT);
    let profiled = run(&mut profiled_command(&exe, &out), LIMIT);
    let expected = format!(
        "read {}\nread {}\nread {}\ndone\n",
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGTERM
    );
    for finished in [&plain, &profiled] {
        assert_eq!(
            (finished.status.code(), finished.stdout.as_str()),
            (Some(0), expected.as_str()),
            "stderr:\n{}",
            finished.stderr
        );
    }
    assert_eq!(steps_of(&out, profiled.pid), vec![1; 5]);
}

#[test]
fn every_thread_the_agent_starts_blocks_every_asynchronous_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = profiled_command("python3", tmp.path());
    // The metrics endpoint too.
    cmd.arg(script())
        .arg("thread-masks")
        .env("VLLM_PROFILING_PROMETHEUS_ADDR", "127.0.0.1:0");
    let child = run(&mut cmd, LIMIT);
    assert_eq!(child.status.code(), Some(0), "stderr:\n{}", child.stderr);
    let threads: Vec<&str> = child.stdout.lines().collect();
    for name in [
        "vprof-collector",
        "vprof-sampler",
        "vprof-signals",
        "vprof-metrics",
    ] {
        assert!(
            threads
                .iter()
                .any(|t| t.starts_with(&format!("thread {name} "))),
            "{name} runs: {threads:?}"
        );
    }
    // The metrics endpoint is one thread, whatever its clients do: no thread of a crate's.
    assert_eq!(threads.len(), 4, "{threads:?}");
    for thread in &threads {
        assert!(thread.ends_with(" unblocked []"), "{threads:?}");
    }
}

#[test]
fn a_saved_and_restored_sigterm_handler_is_sig_dfl_and_the_journal_keeps_the_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("sigterm-save-restore", tmp.path(), &[]);
    assert_eq!(child.stdout, "saved SIG_DFL True\nrestored, killing\n");
    assert_eq!(child.status.signal(), Some(libc::SIGTERM));
    // The host put SIG_DFL back over our handler (the host wins): no exit work ran, and the
    // journal holds the steps.
    recover(tmp.path());
    check_all_five(tmp.path(), child.pid);
}

#[test]
fn a_relative_output_dir_from_the_environment_is_the_working_dir_at_load_even_when_armed() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    for (processes, then) in [
        (None, "record"),
        (Some("not-this-one"), "record"),
        // Armed, then enabled without a configuration: the environment's, as resolved at load.
        (Some("not-this-one"), "enable"),
    ] {
        let mut cmd = profiled_command("python3", Path::new("reports"));
        cmd.current_dir(tmp.path())
            .arg(script())
            .arg("chdir-then-record")
            .arg(&elsewhere)
            .arg(then);
        if let Some(filter) = processes {
            // Outside the filter the process is only armed: it starts at its first recording
            // call, after the chdir.
            cmd.env("VLLM_PROFILING_PROCESSES", filter);
        }
        let child = run(&mut cmd, LIMIT);
        assert_success(&child);
        assert_eq!(child.stdout, "done\n");
        check_all_five(&tmp.path().join("reports"), child.pid);
        assert!(!elsewhere.join("reports").exists(), "{processes:?} {then}");
        std::fs::remove_dir_all(tmp.path().join("reports")).unwrap();
    }
}

#[test]
fn default_sigint_set_by_the_host_dies_by_sigint_losing_at_most_one_interval() {
    // The host set SIG_DFL itself (Python's own default raises KeyboardInterrupt): the host's
    // choice wins, so no exit handler runs; the last periodic export is what is left.
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both(
        "sigint-default",
        tmp.path(),
        &[("VLLM_PROFILING_EXPORT_INTERVAL", "0.2")],
    );
    assert_eq!(child.status.signal(), Some(libc::SIGINT));
    check_all_five(tmp.path(), child.pid);
}

#[test]
fn host_sigterm_handler_runs_and_keeps_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both("sigterm-handler", tmp.path(), &[]);
    assert_eq!(child.status.code(), Some(7));
    assert_eq!(
        child.stdout,
        format!("killing\nhandled {}\n", libc::SIGTERM)
    );
    // The handler's sys.exit runs the exit hooks: the final export.
    check_all_five(tmp.path(), child.pid);
    assert_no_temporaries(tmp.path());
}

#[test]
fn os_exit_leaves_the_last_periodic_export() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both(
        "os-exit",
        tmp.path(),
        &[("VLLM_PROFILING_EXPORT_INTERVAL", "0.2")],
    );
    assert_eq!(child.status.code(), Some(0));
    check_all_five(tmp.path(), child.pid);
}

#[test]
fn abort_keeps_sigabrt_and_leaves_the_last_periodic_export() {
    let tmp = tempfile::tempdir().unwrap();
    let child = run_both(
        "abort",
        tmp.path(),
        &[("VLLM_PROFILING_EXPORT_INTERVAL", "0.2")],
    );
    assert_eq!(child.status.signal(), Some(libc::SIGABRT));
    check_all_five(tmp.path(), child.pid);
}

#[test]
fn fork_while_another_thread_records_keeps_each_pid_to_its_own_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = run_both("fork-threaded", tmp.path(), &[]);
    let children = pids_on(&parent.stdout, "PIDS");
    let mut expected: BTreeSet<u32> = children.iter().copied().collect();
    expected.insert(parent.pid);
    assert_eq!(pids_with_files(tmp.path()), expected);
    // The main thread's steps 1, 2, 3 and the recording thread's (from 1001), nothing else.
    let parent_steps = steps_of(tmp.path(), parent.pid);
    for own in [1, 2, 3] {
        assert!(parent_steps.contains(&own), "{parent_steps:?}");
    }
    assert!(
        parent_steps.iter().all(|&b| b <= 3 || b > 1000),
        "{parent_steps:?}"
    );
    for (n, pid) in children.iter().enumerate() {
        let first = 100 + 10 * n as u32;
        // Only its own two steps: nothing of the parent's, nothing of the recording thread
        // (which does not exist in the child).
        assert_eq!(steps_of(tmp.path(), *pid), vec![first + 1, first + 2]);
    }
    assert_no_temporaries(tmp.path());
}

#[test]
fn forked_children_die_by_default_sigterm_and_only_the_recording_one_journals() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = run_both("fork-sigterm", tmp.path(), &[]);
    let minus_term = format!("child ended by -{}", libc::SIGTERM);
    assert_eq!(
        without_pids(&parent.stdout),
        vec![&*minus_term, &*minus_term]
    );
    let children = pids_on(&parent.stdout, "PIDS");
    // The recording child took SIGTERM over for itself and saved its journal's tail; the
    // quiet one died at once (the parent's signal thread does not exist in it) and wrote
    // nothing.
    assert_eq!(
        pids_with_files(tmp.path()),
        BTreeSet::from([parent.pid, children[0]])
    );
    recover(tmp.path());
    assert_eq!(steps_of(tmp.path(), children[0]), vec![101, 102]);
    assert_eq!(steps_of(tmp.path(), parent.pid), vec![1, 2, 3]);
    assert_no_temporaries(tmp.path());
}

fn check_multiprocessing(method: &str) {
    let tmp = tempfile::tempdir().unwrap();
    // fork and forkserver children leave through os._exit: they keep their last periodic
    // export (the script's children outlive one interval); spawn children exit normally.
    let parent = run_both(
        &format!("mp-{method}"),
        tmp.path(),
        &[("VLLM_PROFILING_EXPORT_INTERVAL", "0.2")],
    );
    let children = pids_on(&parent.stdout, "PIDS");
    let helpers = pids_on(&parent.stdout, "HELPERS");
    let mut expected: BTreeSet<u32> = children.iter().copied().collect();
    expected.insert(parent.pid);
    let found = pids_with_files(tmp.path());
    for helper in &helpers {
        assert!(
            !found.contains(helper),
            "helper {helper} recorded nothing but wrote {:?}",
            file_names(tmp.path())
        );
    }
    assert_eq!(found, expected, "{:?}", file_names(tmp.path()));
    assert_eq!(steps_of(tmp.path(), parent.pid), vec![1, 2, 3]);
    if method == "spawn" {
        // Spawned children leave through sys.exit: their exit hooks ran.
        assert_no_temporaries(tmp.path());
    }
    for (n, pid) in children.iter().enumerate() {
        let first = 100 + 10 * n as u32;
        assert_eq!(steps_of(tmp.path(), *pid), vec![first + 1, first + 2]);
    }
}

#[test]
fn multiprocessing_fork_children_write_their_own_files() {
    check_multiprocessing("fork");
}

#[test]
fn multiprocessing_spawn_children_write_their_own_files_and_helpers_none() {
    check_multiprocessing("spawn");
}

#[test]
fn multiprocessing_forkserver_children_write_their_own_files_and_helpers_none() {
    check_multiprocessing("forkserver");
}

#[test]
fn report_file_names_carry_the_pid() {
    // pids_with_files relies on it.
    assert_eq!(format::summary_file_name(42), "performance_summary_42.json");
}
