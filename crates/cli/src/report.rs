//! `vllm-profiler report DIR`: the exported reports of a dir, by server run, as terminal
//! tables (or the same as JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use vllm_profiler_format::{
    self as format, DeviceStats, GpuHistory, NamedLayer, PerformanceSummary, ProcessReport,
    RunGroup, RunReport, Spread,
};

use crate::input::read_json;
use crate::runs;

/// Layers listed in a report's table.
pub const TOP_LAYERS: usize = 10;

fn spread(values: impl Iterator<Item = Option<f64>>) -> Option<Spread> {
    let values: Vec<f64> = values.flatten().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    // A running mean: a sum of huge figures would overflow.
    let avg = values
        .iter()
        .enumerate()
        .fold(0.0, |mean, (i, v)| mean + (v - mean) / (i + 1) as f64);
    Some(Spread {
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        avg,
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

fn device_stats(history: &GpuHistory) -> Vec<DeviceStats> {
    let device = |id: u32| history.devices.iter().find(|d| d.index == id);
    let mut by_device: BTreeMap<u32, Vec<&format::GpuSample>> = BTreeMap::new();
    for sample in &history.gpu_history {
        by_device.entry(sample.device_id).or_default().push(sample);
    }
    by_device
        .into_iter()
        .map(|(device_id, samples)| DeviceStats {
            device_id,
            name: device(device_id).and_then(|d| d.name.clone()),
            uuid: device(device_id).and_then(|d| d.uuid.clone()),
            pid: history.pid,
            samples: samples.len(),
            gpu_utilization: spread(samples.iter().map(|s| s.gpu_utilization)),
            memory_used_mb: spread(samples.iter().map(|s| s.memory_used_mb)),
            temperature: spread(samples.iter().map(|s| s.temperature)),
            power_draw: spread(samples.iter().map(|s| s.power_draw)),
        })
        .collect()
}

fn top_layers(summary: &PerformanceSummary, n: usize) -> Vec<NamedLayer> {
    let mut layers: Vec<NamedLayer> = summary
        .layer_performance
        .iter()
        .map(|(name, performance)| NamedLayer {
            name: name.clone(),
            performance: performance.clone(),
        })
        .collect();
    layers.sort_by(|a, b| {
        b.performance
            .total_duration_ms
            .total_cmp(&a.performance.total_duration_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
    layers.truncate(n);
    layers
}

/// Everything `report` shows for the reports in `dir`, and one note per file left out (a GPU
/// history that cannot be read costs that process's GPU figures, not the report).
pub fn load(dir: &Path) -> Result<(RunReport, Vec<String>), String> {
    let mut notes = Vec::new();
    let runs = runs::load(dir)?
        .into_iter()
        .map(|run| {
            let mut gpus: Vec<DeviceStats> = Vec::new();
            let mut processes = Vec::new();
            for summary in run.members {
                let history_path = dir.join(format::gpu_history_file_name(summary.pid));
                if history_path.exists() {
                    match read_json(&history_path) {
                        Ok(history) => {
                            for stats in device_stats(&history) {
                                once_per_device(&mut gpus, stats);
                            }
                        }
                        Err(err) => {
                            notes.push(format!("pid {}: GPU figures left out: {err}", summary.pid))
                        }
                    }
                }
                processes.push(ProcessReport {
                    pid: summary.pid,
                    label: runs::label(&summary),
                    top_layers: top_layers(&summary, TOP_LAYERS),
                    summary,
                });
            }
            // A device seen without its UUID (a process whose devices list was empty) is the
            // one of its index that has a UUID, when there is one.
            let with_uuid: Vec<u32> = gpus
                .iter()
                .filter(|g| g.uuid.is_some())
                .map(|g| g.device_id)
                .collect();
            gpus.retain(|g| g.uuid.is_some() || !with_uuid.contains(&g.device_id));
            gpus.sort_by_key(|g| g.device_id);
            Ok(RunGroup {
                run_id: run.run_id,
                processes,
                gpus,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let report = RunReport {
        dir: dir.display().to_string(),
        runs,
    };
    Ok((report, notes))
}

/// Keeps `stats` unless a process of the run sampled its device (its UUID, else its index)
/// more.
fn once_per_device(gpus: &mut Vec<DeviceStats>, stats: DeviceStats) {
    let same = |g: &DeviceStats| match (&g.uuid, &stats.uuid) {
        (Some(a), Some(b)) => a == b,
        (None, None) => g.device_id == stats.device_id,
        _ => false,
    };
    match gpus.iter_mut().find(|g| same(g)) {
        Some(kept) if kept.samples >= stats.samples => {}
        Some(kept) => *kept = stats,
        None => gpus.push(stats),
    }
}

pub(crate) fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn spread_cells(spread: Option<Spread>, decimals: usize) -> [String; 3] {
    match spread {
        None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
        Some(s) => [
            format!("{:.*}", decimals, s.min),
            format!("{:.*}", decimals, s.avg),
            format!("{:.*}", decimals, s.max),
        ],
    }
}

/// Left-aligned first column, right-aligned others, each as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[i]);
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in rows {
        out += &line(row);
    }
    out
}

/// The terminal tables of `report`.
pub fn render(report: &RunReport) -> String {
    let mut out = format!("Reports in {}\n", report.dir);
    for run in &report.runs {
        render_run(&mut out, run);
    }
    out
}

fn render_run(out: &mut String, run: &RunGroup) {
    let _ = writeln!(
        out,
        "\nRun {}: {} process(es)\n",
        run.run_id,
        run.processes.len()
    );
    let rows: Vec<Vec<String>> = run
        .processes
        .iter()
        .map(|p| {
            let s = &p.summary;
            vec![
                p.label.clone(),
                p.pid.to_string(),
                s.total_steps.to_string(),
                s.total_tokens.to_string(),
                s.tokens_per_second
                    .map_or_else(|| "-".to_owned(), |t| format!("{t:.1}")),
                ms(s.avg_duration_ms),
                ms(s.p99_duration_ms),
                s.counters.total_spans.to_string(),
            ]
        })
        .collect();
    *out += &table(
        &[
            "process", "pid", "steps", "tokens", "tokens/s", "avg ms", "p99 ms", "spans",
        ],
        &rows,
    );
    for p in &run.processes {
        render_process(out, p);
    }
    if !run.gpus.is_empty() {
        let _ = writeln!(out, "\nGPUs of run {} (each device once)\n", run.run_id);
        let mut rows = Vec::new();
        for g in &run.gpus {
            let mut label = match &g.name {
                Some(name) => format!("GPU {} {name}", g.device_id),
                None => format!("GPU {}", g.device_id),
            };
            // Two devices of one index (hosts or containers that number their GPUs alike).
            let shared = run
                .gpus
                .iter()
                .filter(|o| o.device_id == g.device_id)
                .count()
                > 1;
            if let (true, Some(uuid)) = (shared, &g.uuid) {
                label = format!("{label} {uuid}");
            }
            for (figure, spread, decimals) in [
                ("utilization %", g.gpu_utilization, 1),
                ("memory used MiB", g.memory_used_mb, 0),
                ("temperature C", g.temperature, 0),
                ("power W", g.power_draw, 1),
            ] {
                let [min, avg, max] = spread_cells(spread, decimals);
                rows.push(vec![
                    format!("{label} {figure}"),
                    min,
                    avg,
                    max,
                    g.samples.to_string(),
                ]);
            }
        }
        *out += &table(&["GPU", "min", "avg", "max", "samples"], &rows);
    }
}

fn render_process(out: &mut String, p: &ProcessReport) {
    let s = &p.summary;
    let empty = if s.empty_steps > 0 {
        format!(" (+{} empty)", s.empty_steps)
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "\nProcess {} {} ({} steps{empty}, {} tokens{})\n\n",
        p.pid,
        p.label,
        s.total_steps,
        s.total_tokens,
        s.tokens_per_second
            .map_or_else(String::new, |t| format!(", {t:.1} tokens/s"))
    );
    *out += &table(
        &[
            "step duration (ms)",
            "avg",
            "p50",
            "p90",
            "p99",
            "min",
            "max",
        ],
        &[vec![
            "all steps".to_owned(),
            ms(s.avg_duration_ms),
            ms(s.p50_duration_ms),
            ms(s.p90_duration_ms),
            ms(s.p99_duration_ms),
            ms(s.min_duration_ms),
            ms(s.max_duration_ms),
        ]],
    );
    if !p.top_layers.is_empty() {
        *out += "\n";
        // Host time is the time to launch a layer's work; on a GPU its device time is apart,
        // and shown apart, only where some was measured.
        let device = p
            .top_layers
            .iter()
            .any(|l| l.performance.avg_gpu_duration_ms.is_some());
        let rows: Vec<Vec<String>> = p
            .top_layers
            .iter()
            .map(|l| {
                let mut row = vec![
                    l.name.clone(),
                    l.performance.call_count.to_string(),
                    format!("{:.3}", l.performance.avg_duration_ms),
                    format!("{:.3}", l.performance.total_duration_ms),
                ];
                if device {
                    row.push(ms(l.performance.avg_gpu_duration_ms));
                    row.push(ms(l.performance.total_gpu_duration_ms));
                }
                row
            })
            .collect();
        let mut header = vec!["top layers", "calls", "host avg ms", "host total ms"];
        if device {
            header.extend(["GPU avg ms", "GPU total ms"]);
        }
        *out += &table(&header, &rows);
    }
    let c = &s.counters;
    if c.dropped_steps + c.lost_events + c.dropped_samples > 0 {
        let _ = writeln!(
            out,
            "\nnot kept: {} steps evicted from the history, {} samples, {} events lost",
            c.dropped_steps, c.dropped_samples, c.lost_events
        );
    }
}
