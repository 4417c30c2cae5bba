//! One sampler per device per host: four profiled `python3` processes share two fake NVML
//! devices. Exactly one process calls NVML's sampling functions for each device at any time,
//! the others read its samples (their reports carry them), and when the sampling process is
//! killed another one takes over.
#![allow(unsafe_code)] // it sends signals to the processes it drives

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vllm_profiler_format::{GpuHistory, GpuSample, MemorySource};
use vllm_profiler_tests::*;

const PROCESSES: usize = 4;
const LIMIT: Duration = Duration::from_secs(60);

/// The calls a process makes only while it samples a device (the detection at start-up also
/// reads names, UUIDs and memory, so those are left out).
fn is_sampling_call(function: &str) -> bool {
    function.starts_with("nvmlDevice")
        && ![
            "nvmlDeviceGetName",
            "nvmlDeviceGetUUID",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetMemoryInfo_v2",
            "nvmlDeviceGetHandleByIndex_v2",
            "nvmlDeviceGetCount_v2",
            "nvmlDeviceGetIndex",
        ]
        .contains(&function)
}

/// One line of the fake's call log, or the test's own marker.
enum Logged {
    Call {
        pid: u32,
        function: String,
        device: u32,
    },
    /// A line `TEST <what>` the test wrote.
    Marker(String),
}

const MARKER: &str = "killed-the-sampler";

/// Appends the marker `TEST what` to the call log.
fn mark(call_log: &Path, what: &str) {
    use std::io::Write;
    let mut log = fs::OpenOptions::new().append(true).open(call_log).unwrap();
    writeln!(log, "TEST {what}").unwrap();
}

fn read_log(path: &Path) -> Vec<Logged> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            if let Some(what) = line.strip_prefix("TEST ") {
                return Some(Logged::Marker(what.to_owned()));
            }
            let mut fields = line.split(' ');
            let pid = fields.next()?.parse().ok()?;
            let function = fields.next()?.to_owned();
            let device = fields.next()?.parse().ok()?;
            Some(Logged::Call {
                pid,
                function,
                device,
            })
        })
        .collect()
}

/// Per device, the pids that made sampling calls before and after the marker.
fn samplers(log: &[Logged]) -> BTreeMap<u32, (BTreeSet<u32>, BTreeSet<u32>)> {
    let mut by_device: BTreeMap<u32, (BTreeSet<u32>, BTreeSet<u32>)> = BTreeMap::new();
    let mut after = false;
    for entry in log {
        match entry {
            Logged::Marker(what) => after |= what == MARKER,
            Logged::Call {
                pid,
                function,
                device,
            } if is_sampling_call(function) => {
                let sets = by_device.entry(*device).or_default();
                if after { &mut sets.1 } else { &mut sets.0 }.insert(*pid);
            }
            Logged::Call { .. } => {}
        }
    }
    by_device
}

/// Waits, reading the call log every 10 ms, until `done` holds for it: the test moves on when
/// the processes did what it waits for, however fast or slow the machine is. Fails past
/// `LIMIT`.
fn wait_for_log(call_log: &Path, started: Instant, what: &str, done: impl Fn(&[Logged]) -> bool) {
    while !done(&read_log(call_log)) {
        assert!(started.elapsed() < LIMIT, "waited {LIMIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ticks on `device` after the marker `after` (from the start: `None`), by `pid` (anyone:
/// `None`). A tick is one sample of the device, which opens with its utilization (the other
/// sampling calls of a tick, some twice, are not counted).
fn ticks_after(log: &[Logged], after: Option<&str>, pid: Option<u32>, device: u32) -> usize {
    let mut counting = after.is_none();
    let mut ticks = 0;
    for entry in log {
        match entry {
            Logged::Marker(what) => counting |= Some(what.as_str()) == after,
            Logged::Call {
                pid: caller,
                function,
                device: called,
            } if counting
                && *called == device
                && function == "nvmlDeviceGetUtilizationRates"
                && pid.is_none_or(|pid| pid == *caller) =>
            {
                ticks += 1
            }
            Logged::Call { .. } => {}
        }
    }
    ticks
}

/// Per device, the pids of its sampling calls in log order with repeats collapsed: the
/// succession of its samplers.
fn successions(log: &[Logged]) -> BTreeMap<u32, Vec<u32>> {
    let mut by_device: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in log {
        if let Logged::Call {
            pid,
            function,
            device,
        } = entry
        {
            if is_sampling_call(function) {
                let runs = by_device.entry(*device).or_default();
                if runs.last() != Some(pid) {
                    runs.push(*pid);
                }
            }
        }
    }
    by_device
}

/// The samples of one device in the order the file lists them.
fn device_samples(history: &GpuHistory, device_id: u32) -> Vec<GpuSample> {
    history
        .gpu_history
        .iter()
        .filter(|s| s.device_id == device_id)
        .cloned()
        .collect()
}

fn script(call_log: &Path) -> Value {
    let device = |name: &str, uuid: &str, utilization: u32, used_mb: u64, own: bool| {
        let mut frame = json!({
            "gpu_utilization": utilization, "memory_controller_utilization": 3,
            "memory_used_mb": used_mb, "temperature": 50, "power_draw_mw": 200_000,
            "power_limit_mw": 700_000, "sm_clock_mhz": 1500, "memory_clock_mhz": 2600,
        });
        if own {
            // "self" is whichever process calls: the sampler.
            frame["processes"] = json!([{"pid": "self", "used_memory_mb": 300}]);
        }
        json!({"name": name, "uuid": uuid, "memory_total_mb": 81920, "frames": [frame]})
    };
    json!({
        "call_log": call_log,
        "devices": [
            device("Shared Zero", "GPU-5a5a5a5a-0000-0000-0000-000000000000", 11, 2000, true),
            device("Shared One", "GPU-5a5a5a5a-1111-1111-1111-111111111111", 77, 4000, false),
        ]
    })
}

/// `record_steps.py timed STEPS 0.05` profiled on the fake NVML, sampling every 20 ms, its
/// stderr in `dir/stderr-INDEX.txt`.
fn spawn_recorder(dir: &Path, out: &Path, index: usize, steps: u32, env: &[(&str, &str)]) -> Child {
    let stderr = fs::File::create(dir.join(format!("stderr-{index}.txt"))).unwrap();
    let mut cmd = profiled_command("python3", out);
    cmd.arg(workspace_root().join("tests/data/record_steps.py"))
        .args(["timed", &steps.to_string(), "0.05"]);
    with_fake_nvml(&mut cmd, dir);
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("python3 starts")
}

/// Samples the fake NVML scripted by `dir/nvml.json` every 20 ms.
fn with_fake_nvml(cmd: &mut std::process::Command, dir: &Path) {
    cmd.env("FAKE_NVML_SCRIPT", dir.join("nvml.json"))
        .env("VLLM_PROFILING_NVML_LIBRARY", fake_nvml_library())
        .env("VLLM_PROFILING_AMDSMI_LIBRARY", dir.join("no-amd.so"))
        .env("VLLM_PROFILING_SAMPLE_INTERVAL", "0.02");
}

fn wait_with_limit(child: &mut Child, started: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("a recorder ran longer than {LIMIT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new dir with the fake NVML's script (`nvml.json`, logging its calls to `calls.log`) and
/// the output dir `out`.
fn scripted_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let call_log = tmp.path().join("calls.log");
    fs::write(tmp.path().join("nvml.json"), script(&call_log).to_string()).unwrap();
    (tmp, out, call_log)
}

#[test]
fn one_process_samples_each_device_and_another_takes_over_when_it_is_killed() {
    let (tmp, out, call_log) = scripted_dir();
    let dir = tmp.path();

    let started = Instant::now();
    let mut children: Vec<Child> = (0..PROCESSES)
        // 90 steps of 50 ms: about 4.5 s of recording.
        .map(|i| spawn_recorder(dir, &out, i, 90, &[]))
        .collect();
    let pids: Vec<u32> = children.iter().map(Child::id).collect();

    // Let every process detect the devices and sample for a while: 50 ticks of each device.
    wait_for_log(&call_log, started, "50 samples of each device", |log| {
        [0, 1]
            .iter()
            .all(|&d| ticks_after(log, None, None, d) >= 50)
    });
    let before = samplers(&read_log(&call_log));
    let holder_of = |device: u32| -> u32 {
        let (pids_before, _) = &before[&device];
        assert_eq!(
            pids_before.len(),
            1,
            "device {device} was sampled by {pids_before:?} at once"
        );
        *pids_before.iter().next().unwrap()
    };
    let killed = holder_of(0);
    assert!(pids.contains(&killed));

    let position = pids.iter().position(|&p| p == killed).unwrap();
    let mut victim = children.remove(position);
    victim.kill().unwrap();
    victim.wait().unwrap();
    // The victim is gone: every line after the marker comes from the survivors.
    mark(&call_log, MARKER);

    for child in &mut children {
        let status = wait_with_limit(child, started);
        assert!(status.success(), "a survivor failed: {status:?}");
    }

    let log = read_log(&call_log);
    // One sampler at a time: a device passes from one process to the next (when the holder
    // is killed, or exits at the end of its run) and never back.
    let succession = successions(&log);
    for (device, holders) in &succession {
        let distinct: BTreeSet<u32> = holders.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            holders.len(),
            "device {device}: {holders:?}"
        );
    }
    // (Between the kill and the marker a survivor may already have taken over, so "before the
    // marker" is not "before the kill": the holders seen before the kill come from `before`.)
    for (device, (_, pids_after)) in samplers(&log) {
        assert!(
            !pids_after.contains(&killed),
            "device {device}: the killed one sampled"
        );
        let holders = &succession[&device];
        assert_eq!(
            holders[0],
            holder_of(device),
            "device {device}: {holders:?}"
        );
        if holders[0] == killed {
            assert!(
                holders.len() >= 2 && pids.contains(&holders[1]),
                "device {device} was not taken over: {holders:?}"
            );
        }
    }

    // Every survivor's reports carry both devices' samples and its steps their figures, though
    // at most one of them read NVML for a given device at a time.
    let sampled_device0: BTreeSet<u32> = succession[&0].iter().copied().collect();
    for &pid in pids.iter().filter(|&&p| p != killed) {
        let reports = read_reports(&out, pid);
        for (device, utilization) in [(0, 11.0), (1, 77.0)] {
            let samples = device_samples(&reports.history, device);
            assert!(
                samples.len() >= 20,
                "pid {pid} device {device}: {}",
                samples.len()
            );
            for sample in &samples {
                assert_eq!(sample.gpu_utilization, Some(utilization));
                assert_eq!(sample.device_id, device);
            }
            // Each sample is taken once: strictly increasing times.
            assert!(samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        }
        // This process's own memory on device 0 is 300 MiB in the samples it took itself (the
        // fake lists the caller), 0 in the ones it read (it is not in the sampler's list).
        let own: BTreeSet<u64> = device_samples(&reports.history, 0)
            .iter()
            .map(|s| s.process_memory_used_mb.unwrap() as u64)
            .collect();
        if sampled_device0.contains(&pid) {
            assert_eq!(own, BTreeSet::from([0, 300]), "pid {pid}");
        } else {
            assert_eq!(own, BTreeSet::from([0]), "pid {pid}");
            assert_eq!(reports.steps.memory_source, MemorySource::Gpu, "pid {pid}");
        }

        let steps = &reports.steps.detailed_steps;
        assert_eq!(steps.len(), 90, "pid {pid}");
        let first_with_figures = steps
            .iter()
            .position(|s| s.gpu_metrics.end_utilization.is_some())
            .unwrap_or_else(|| panic!("pid {pid}: no step has GPU figures"));
        assert!(first_with_figures < 45, "pid {pid}: {first_with_figures}");
        for step in &steps[first_with_figures..] {
            assert_eq!(step.gpu_metrics.end_utilization, Some(11.0), "pid {pid}");
        }
    }
}

#[test]
fn with_sharing_off_every_process_samples_its_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let call_log = dir.join("calls.log");
    fs::write(dir.join("nvml.json"), script(&call_log).to_string()).unwrap();
    let started = Instant::now();
    let mut children: Vec<Child> = (0..2)
        .map(|i| spawn_recorder(dir, &out, i, 20, &[("VLLM_PROFILING_SHARED_SAMPLER", "0")]))
        .collect();
    for child in &mut children {
        assert!(wait_with_limit(child, started).success());
    }
    let pids: BTreeSet<u32> = children.iter().map(Child::id).collect();
    for (device, (pids_before, _)) in samplers(&read_log(&call_log)) {
        assert_eq!(pids_before, pids, "device {device}");
    }
    assert!(!file_names(dir)
        .iter()
        .any(|name| name.ends_with(".runtime")));
}

/// Per device, the pids of the sampling calls logged between markers `from` and `to`.
fn samplers_between(log: &[Logged], from: &str, to: &str) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut by_device: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut inside = false;
    for entry in log {
        match entry {
            Logged::Marker(what) if what == from => inside = true,
            Logged::Marker(what) if what == to => inside = false,
            Logged::Call {
                pid,
                function,
                device,
            } if inside && is_sampling_call(function) => {
                by_device.entry(*device).or_default().insert(*pid);
            }
            _ => {}
        }
    }
    by_device
}

/// A holder stopped with SIGSTOP keeps its locks: the other process takes sampling over
/// once the samples are stale (three intervals, at least 0.5 s), and the holder, continued,
/// sees the newer generation and yields. At most one process samples a device at a time, but
/// for one interval around the takeover.
#[test]
fn a_stopped_sampler_is_taken_over_and_yields_when_it_continues() {
    let (tmp, out, call_log) = scripted_dir();
    let dir = tmp.path();
    let started = Instant::now();
    // 120 steps of 50 ms: about 6 s of recording each.
    let mut children: Vec<Child> = (0..2)
        .map(|i| spawn_recorder(dir, &out, i, 120, &[]))
        .collect();
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    wait_for_log(&call_log, started, "25 samples of each device", |log| {
        [0, 1]
            .iter()
            .all(|&d| ticks_after(log, None, None, d) >= 25)
    });
    let holders = successions(&read_log(&call_log));
    let holder = *holders[&0].last().unwrap();
    let other = *pids.iter().find(|&&p| p != holder).unwrap();
    let signal = |sig| {
        // SAFETY: kill(2) with a child's pid and a valid signal number.
        assert_eq!(unsafe { libc::kill(holder as i32, sig) }, 0);
    };
    signal(libc::SIGSTOP);
    // Stopped for sure (every thread of it), so that none of its calls comes after the marker.
    let all_stopped = || {
        fs::read_dir(format!("/proc/{holder}/task"))
            .unwrap()
            .all(|task| {
                fs::read_to_string(task.unwrap().path().join("stat"))
                    .unwrap_or_default()
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
    };
    while !all_stopped() {
        std::thread::sleep(Duration::from_millis(5));
    }
    mark(&call_log, "stopped");
    // The other process finds the samples stale (0.5 s) and takes over: 50 of its ticks
    // (1 s at 20 ms) after the stop.
    let other_sampled = |after: &'static str, ticks: usize| {
        move |log: &[Logged]| {
            [0, 1]
                .iter()
                .all(|&d| ticks_after(log, Some(after), Some(other), d) >= ticks)
        }
    };
    wait_for_log(
        &call_log,
        started,
        "the takeover",
        other_sampled("stopped", 50),
    );
    mark(&call_log, "continuing");
    signal(libc::SIGCONT);
    // One interval (20 ms) of two writers at most, then the holder has yielded: 15 ticks of
    // the taker's (0.3 s) are far more than that.
    wait_for_log(
        &call_log,
        started,
        "15 ticks",
        other_sampled("continuing", 15),
    );
    mark(&call_log, "settled");
    wait_for_log(&call_log, started, "50 ticks", other_sampled("settled", 50));
    mark(&call_log, "end");
    for child in &mut children {
        let status = wait_with_limit(child, started);
        assert!(status.success(), "a recorder failed: {status:?}");
    }

    let log = read_log(&call_log);
    let stopped = samplers_between(&log, "stopped", "continuing");
    let settled = samplers_between(&log, "settled", "end");
    for device in [0, 1] {
        assert_eq!(
            stopped[&device],
            BTreeSet::from([other]),
            "device {device} while stopped"
        );
        assert_eq!(
            settled[&device],
            BTreeSet::from([other]),
            "device {device}: the holder yielded"
        );
    }
    // The other process's samples of the device have no gap of the stop's length: the
    // takeover came after about 0.5 s (the generous bound leaves room for a slow machine).
    let reports = read_reports(&out, other);
    let samples = device_samples(&reports.history, 0);
    let widest = samples
        .windows(2)
        .map(|w| w[1].timestamp - w[0].timestamp)
        .fold(0.0, f64::max);
    assert!(
        widest < 1.2,
        "a gap of {widest} s in {} samples",
        samples.len()
    );
    assert!(samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
}

/// A forked child that outlives its parent must not keep the parent's devices locked: the
/// next process becomes their sampler while the child still runs.
#[test]
fn a_forked_child_does_not_keep_its_parents_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let call_log = dir.join("calls.log");
    fs::write(dir.join("nvml.json"), script(&call_log).to_string()).unwrap();
    // The parent samples, forks a child that sleeps 6 s without recording, and leaves with
    // os._exit (so nothing unlocks on its way out); it prints the child's pid.
    let mut parent = profiled_command("python3", &out);
    with_fake_nvml(&mut parent, dir);
    parent
        .arg(workspace_root().join("tests/data/record_steps.py"))
        .args(["fork-and-leave", "10", "6"]);
    let parent = run(&mut parent, LIMIT);
    assert_success(&parent);
    let child: u32 = parent.stdout.trim().parse().expect("the child's pid");
    let parent_calls = successions(&read_log(&call_log));
    assert_eq!(parent_calls[&0], vec![parent.pid]);

    let mut next = profiled_command("python3", &out);
    with_fake_nvml(&mut next, dir);
    next.arg(workspace_root().join("tests/data/record_steps.py"))
        .args(["timed", "20", "0.05"]);
    let next = run(&mut next, LIMIT);
    assert_success(&next);
    assert!(
        Path::new(&format!("/proc/{child}")).exists(),
        "the child should still be sleeping"
    );
    let holders = successions(&read_log(&call_log));
    for device in [0, 1] {
        assert_eq!(
            holders[&device],
            vec![parent.pid, next.pid],
            "device {device}"
        );
    }
    assert_eq!(read_reports(&out, next.pid).steps.detailed_steps.len(), 20);
}
