//! Figures that are not criterion-shaped, from the real `libvllm_profiler.so` (dlopen):
//!
//! - `p6`: resident memory (`/proc/self/statm`) of a process with the agent enabled at the
//!   default history (10 000 steps and samples, GPU monitoring at its default), before
//!   enabling (the baseline, library loaded), right after, and after 10 k, 100 k, 1 M and 10 M
//!   steps with one span each. Targets: at most 16 MB added; flat from 1 M to 10 M steps.
//! - `p7b`: p50/p99/p99.9 latency of one `step_begin` + `step_end` pair, each pair timed on
//!   its own, on a recording thread while no export runs, then while another thread exports a
//!   session of 10 000 kept steps in a loop, then quiet again. Target: p99 not more than
//!   doubled by the exports.
//!
//! Run (one JSON line on stdout; progress on stderr):
//!   `cargo bench --bench p6_p7_probe -- all` (or `p6`, or `p7b`)
//! `all` runs each figure in a fresh process (this binary again), so that one cannot change
//! the other's memory. Without an argument (as `cargo bench --workspace` runs it) it prints
//! its usage and exits. Smoke (CI, seconds): `BENCH_SMOKE=1 cargo bench --bench p6_p7_probe
//! -- all` (1 M steps for p6, short phases for p7b).
//!
//! Honest measurement: a tight loop outruns the agent's collector thread, so every recording
//! loop here drains the rings itself (`vllm_profiler_summary_json(0, NULL, 0)`) after each
//! batch of at most 8000 events, untimed; each figure says how many events were lost (0).
#![allow(unsafe_code)] // it calls the C ABI through `dlopen`ed function pointers

use std::ffi::CStr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

mod common;
use common::Abi;

const MB: f64 = vllm_profiler_format::BYTES_PER_MIB as f64;

fn main() {
    let mode = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let figures = match mode.as_str() {
        "p6" => json!({ "p6": p6() }),
        "p7b" => json!({ "p7b": p7b() }),
        "all" => {
            let mut all = serde_json::Map::new();
            for mode in ["p6", "p7b"] {
                all.extend(run_child(mode));
            }
            Value::Object(all)
        }
        _ => {
            eprintln!(
                "p6_p7_probe: pass p6, p7b or all, e.g. `cargo bench --bench p6_p7_probe -- all`; \
                 it prints one JSON line"
            );
            return;
        }
    };
    println!("{figures}");
}

/// Runs this binary for one figure and returns the object of its JSON line.
fn run_child(mode: &str) -> serde_json::Map<String, Value> {
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(exe)
        .arg(mode)
        // The library is built (or named) once, here, not again by each child.
        .env("VLLM_PROFILER_LIBRARY", common::library_path())
        .stderr(Stdio::inherit())
        .output()
        .expect("the probe runs");
    assert!(output.status.success(), "p6_p7_probe {mode} failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().expect("one JSON line");
    match serde_json::from_str(line).expect("JSON") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn load() -> Abi {
    common::load(&common::library_path())
}

fn lost_events(abi: &Abi) -> u64 {
    abi.summary()["counters"]["lost_events"]
        .as_u64()
        .expect("lost_events")
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / MB * 100.0).round() / 100.0
}

fn p6() -> Value {
    let rss_before_load = common::rss_bytes();
    let abi = load();
    let output = tempfile::tempdir().expect("temp dir");
    let rss_before_enable = common::rss_bytes();
    // Default history and GPU monitoring: only where the reports go is set.
    abi.enable_with(&json!({ "output_dir": output.path() }));
    // Let the threads start and the sampler take its first samples.
    std::thread::sleep(Duration::from_millis(300));
    let rss_after_enable = common::rss_bytes();
    let total: u64 = if common::smoke() {
        1_000_000
    } else {
        10_000_000
    };
    let checkpoints = [10_000u64, 100_000, 1_000_000, 10_000_000];
    let span = c"model.layers.0";
    let start = Instant::now();
    let mut at = serde_json::Map::new();
    let mut rss_at = Vec::new();
    let mut done = 0u64;
    while done < total {
        // 2 events a step: 2000 per batch, far from a ring's 8192.
        for _ in 0..1000 {
            assert_eq!(abi.step_with_span(span), 0);
        }
        abi.drain();
        done += 1000;
        if checkpoints.contains(&done) {
            let rss = common::rss_bytes();
            rss_at.push((done, rss));
            at.insert(
                format!("added_mb_after_{done}_steps"),
                json!(mb(rss.saturating_sub(rss_before_enable))),
            );
            eprintln!(
                "p6: {done} steps, RSS {:.1} MB ({:.1} s)",
                rss as f64 / MB,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let lost = lost_events(&abi);
    let rss_end = common::rss_bytes();
    let rss_1m = rss_at
        .iter()
        .find(|(n, _)| *n == 1_000_000)
        .map_or(rss_end, |(_, r)| *r);
    let mut figures = json!({
        "steps": total,
        "spans_per_step": 1,
        "max_history": 10_000,
        "rss_before_load_mb": mb(rss_before_load),
        "rss_baseline_mb": mb(rss_before_enable),
        "added_mb_after_enable": mb(rss_after_enable.saturating_sub(rss_before_enable)),
        "added_mb": mb(rss_end.saturating_sub(rss_before_enable)),
        "growth_mb_1m_to_end": (rss_end as f64 - rss_1m as f64) / MB,
        "seconds_recording": seconds,
        "lost_events": lost,
    });
    figures.as_object_mut().expect("object").extend(at);
    figures
}

/// Records one quiet or exporting phase of `seconds`: batches of 1000 timed pairs, each pair
/// timed on its own, then 1000 untimed steps with two layers of two nested spans (so the
/// exported history keeps its spans), then a drain.
fn p7b_phase(abi: &Abi, seconds: f64) -> (Histogram<u64>, u64) {
    let mut latencies = Histogram::<u64>::new(3).expect("histogram");
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut pairs = 0;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let start = Instant::now();
            std::hint::black_box(abi.step_pair());
            let ns = start.elapsed().as_nanos() as u64;
            latencies.saturating_record(ns.max(1));
        }
        pairs += 1000;
        for _ in 0..1000 {
            filler_step(abi);
        }
        abi.drain();
    }
    (latencies, pairs)
}

const LAYERS: [&CStr; 2] = [c"model.layers.0", c"model.layers.1"];

/// A step with two layers, each with one nested span: 5 events.
fn filler_step(abi: &Abi) {
    // SAFETY: integers and NUL-terminated static strings.
    unsafe {
        let step = (abi.step_begin)(8, 512);
        for layer in LAYERS {
            let outer = (abi.span_begin)(layer.as_ptr());
            let inner = (abi.span_begin)(c"self_attn".as_ptr());
            (abi.span_end)(inner);
            (abi.span_end)(outer);
        }
        (abi.step_end)(step);
    }
}

fn quantiles(h: &Histogram<u64>) -> Value {
    json!({
        "p50_ns": h.value_at_quantile(0.50),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "max_ns": h.max(),
    })
}

fn p7b() -> Value {
    let abi = load();
    let output = tempfile::tempdir().expect("temp dir");
    abi.enable_with(&json!({
        "output_dir": output.path(),
        "enable_gpu_monitoring": false,
    }));
    // The default history full: 10 000 kept steps with spans.
    for i in 0..10_000 {
        filler_step(&abi);
        if i % 1000 == 999 {
            abi.drain();
        }
    }
    let phase = if common::smoke() { 0.5 } else { 3.0 };
    // Warm: the thread's recorder, the caches.
    p7b_phase(&abi, 0.1);
    let (quiet, quiet_pairs) = p7b_phase(&abi, phase);

    let stop = AtomicBool::new(false);
    let (exporting, exporting_pairs, exports) = std::thread::scope(|scope| {
        let exporter = scope.spawn(|| {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                assert_eq!(
                    abi.export_to(output.path()),
                    3,
                    "summary, detailed steps and trace (no GPU history: monitoring is off)"
                );
                times.push(start.elapsed());
            }
            times
        });
        let (h, pairs) = p7b_phase(&abi, phase);
        stop.store(true, Ordering::Relaxed);
        (h, pairs, exporter.join().expect("exporter"))
    });
    // Control: the same length of busy work on another thread without the agent (a 5 MB
    // buffer filled and written to a file in a loop, about what an export writes), to tell the
    // cost of sharing the machine's cores and caches from anything the agent does.
    stop.store(false, Ordering::Relaxed);
    let (control, control_pairs) = std::thread::scope(|scope| {
        let busy = scope.spawn(|| {
            let mut buf = vec![0u8; 5 << 20];
            let path = output.path().join("control.bin");
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                buf.iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (i as u8) ^ round);
                std::fs::write(&path, &buf).expect("control write");
            }
        });
        let (h, pairs) = p7b_phase(&abi, phase);
        stop.store(true, Ordering::Relaxed);
        busy.join().expect("busy thread");
        (h, pairs)
    });
    let (quiet_again, quiet_again_pairs) = p7b_phase(&abi, phase);
    let lost = lost_events(&abi);

    let mut quiet_all = quiet.clone();
    quiet_all.add(&quiet_again).expect("same histogram shape");
    let export_ms: Vec<f64> = exports.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let mean_export_ms = export_ms.iter().sum::<f64>() / export_ms.len().max(1) as f64;
    let max_export_ms = export_ms.iter().copied().fold(0.0, f64::max);
    let p99_ratio =
        exporting.value_at_quantile(0.99) as f64 / quiet_all.value_at_quantile(0.99).max(1) as f64;
    json!({
        "kept_steps": 10_000,
        "timing": "each pair between two Instant::now(), so every figure includes one clock read",
        "quiet": quantiles(&quiet),
        "exporting": quantiles(&exporting),
        "control_busy_thread": quantiles(&control),
        "quiet_again": quantiles(&quiet_again),
        "p99_ns_quiet": quiet_all.value_at_quantile(0.99),
        "p99_ns_exporting": exporting.value_at_quantile(0.99),
        "p99_ratio": (p99_ratio * 1000.0).round() / 1000.0,
        "p99_ns_control_busy_thread": control.value_at_quantile(0.99),
        "pairs": {
            "quiet": quiet_pairs,
            "exporting": exporting_pairs,
            "control_busy_thread": control_pairs,
            "quiet_again": quiet_again_pairs,
        },
        "exports": exports.len(),
        "export_ms_mean": mean_export_ms,
        "export_ms_max": max_export_ms,
        "lost_events": lost,
    })
}
