//! `vllm-profiler report DIR` and `vllm-profiler compare A B`: read exported reports, print
//! terminal tables (or the same as JSON), and flag regressions between two runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use vllm_profiler_format::{
    self as format, Change, Comparison, DeviceStats, GpuHistory, NamedLayer, PerformanceSummary,
    ProcessReport, RunReport, Spread,
};

use crate::input::read_json;

/// Layers listed in a report's table.
pub const TOP_LAYERS: usize = 10;

/// The pids with a performance summary in `dir`, ascending.
fn pids_in(dir: &Path) -> Result<Vec<u32>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| format::summary_pid(entry.file_name().to_str()?))
        .collect();
    pids.sort_unstable();
    if pids.is_empty() {
        return Err(format!(
            "no performance_summary_<pid>.json in {}",
            dir.display()
        ));
    }
    Ok(pids)
}

fn spread(values: impl Iterator<Item = Option<f64>>) -> Option<Spread> {
    let values: Vec<f64> = values.flatten().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    let sum: f64 = values.iter().sum();
    Some(Spread {
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        avg: sum / values.len() as f64,
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

fn device_stats(history: &GpuHistory) -> Vec<DeviceStats> {
    let mut by_device: BTreeMap<u32, Vec<&format::GpuSample>> = BTreeMap::new();
    for sample in &history.gpu_history {
        by_device.entry(sample.device_id).or_default().push(sample);
    }
    by_device
        .into_iter()
        .map(|(device_id, samples)| DeviceStats {
            device_id,
            name: history
                .devices
                .iter()
                .find(|d| d.index == device_id)
                .and_then(|d| d.name.clone()),
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

/// Everything `report` shows for the reports in `dir`.
pub fn load(dir: &Path) -> Result<RunReport, String> {
    let processes = pids_in(dir)?
        .into_iter()
        .map(|pid| {
            let summary: PerformanceSummary = read_json(&dir.join(format::summary_file_name(pid)))?;
            let history_path = dir.join(format::gpu_history_file_name(pid));
            let gpus = if history_path.exists() {
                device_stats(&read_json(&history_path)?)
            } else {
                Vec::new()
            };
            Ok(ProcessReport {
                pid,
                top_layers: top_layers(&summary, TOP_LAYERS),
                summary,
                gpus,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(RunReport {
        dir: dir.display().to_string(),
        processes,
    })
}

fn ms(value: Option<f64>) -> String {
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
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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
    for p in &report.processes {
        let s = &p.summary;
        let role = match s.rank {
            Some(rank) => format!("{} rank {rank}", s.role.as_str()),
            None => s.role.as_str().to_owned(),
        };
        let empty = if s.empty_steps > 0 {
            format!(" (+{} empty)", s.empty_steps)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "\nProcess {} {role} ({} steps{empty}, {} tokens{})\n\n",
            p.pid,
            s.total_steps,
            s.total_tokens,
            s.tokens_per_second
                .map_or_else(String::new, |t| format!(", {t:.1} tokens/s"))
        );
        out += &table(
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
            out += "\n";
            let rows: Vec<Vec<String>> = p
                .top_layers
                .iter()
                .map(|l| {
                    vec![
                        l.name.clone(),
                        l.performance.call_count.to_string(),
                        format!("{:.3}", l.performance.avg_duration_ms),
                        format!("{:.3}", l.performance.total_duration_ms),
                    ]
                })
                .collect();
            out += &table(&["top layers", "calls", "avg ms", "total ms"], &rows);
        }
        if !p.gpus.is_empty() {
            out += "\n";
            let mut rows = Vec::new();
            for g in &p.gpus {
                let label = match &g.name {
                    Some(name) => format!("GPU {} {name}", g.device_id),
                    None => format!("GPU {}", g.device_id),
                };
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
            out += &table(&["GPU", "min", "avg", "max", "samples"], &rows);
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
    out
}

/// The summary of `path`: a summary file, or the process with the most steps in a dir.
fn summary_of(path: &Path) -> Result<PerformanceSummary, String> {
    if path.is_file() {
        return read_json(path);
    }
    let mut best: Option<PerformanceSummary> = None;
    for pid in pids_in(path)? {
        let summary: PerformanceSummary = read_json(&path.join(format::summary_file_name(pid)))?;
        if best
            .as_ref()
            .is_none_or(|b| summary.total_steps > b.total_steps)
        {
            best = Some(summary);
        }
    }
    best.ok_or_else(|| format!("no reports in {}", path.display()))
}

fn change(name: &str, a: Option<f64>, b: Option<f64>, higher_is_better: bool, t: f64) -> Change {
    let change_percent = match (a, b) {
        (Some(a), Some(b)) if a != 0.0 => Some((b - a) / a * 100.0),
        _ => None,
    };
    let regression = change_percent.is_some_and(|c| if higher_is_better { c < -t } else { c > t });
    Change {
        name: name.to_owned(),
        a,
        b,
        change_percent,
        higher_is_better,
        regression,
    }
}

/// Compares run A with run B (dirs or summary files).
pub fn compare(a: &Path, b: &Path, threshold_percent: f64) -> Result<Comparison, String> {
    let (sa, sb) = (summary_of(a)?, summary_of(b)?);
    let t = threshold_percent;
    let metrics = vec![
        change(
            "avg_duration_ms",
            sa.avg_duration_ms,
            sb.avg_duration_ms,
            false,
            t,
        ),
        change(
            "p50_duration_ms",
            sa.p50_duration_ms,
            sb.p50_duration_ms,
            false,
            t,
        ),
        change(
            "p90_duration_ms",
            sa.p90_duration_ms,
            sb.p90_duration_ms,
            false,
            t,
        ),
        change(
            "p99_duration_ms",
            sa.p99_duration_ms,
            sb.p99_duration_ms,
            false,
            t,
        ),
        change(
            "max_duration_ms",
            sa.max_duration_ms,
            sb.max_duration_ms,
            false,
            t,
        ),
        change(
            "tokens_per_second",
            sa.tokens_per_second,
            sb.tokens_per_second,
            true,
            t,
        ),
        change(
            "avg_memory_mb",
            sa.avg_memory_mb,
            sb.avg_memory_mb,
            false,
            t,
        ),
        change(
            "max_memory_mb",
            sa.max_memory_mb,
            sb.max_memory_mb,
            false,
            t,
        ),
    ];
    let layers: Vec<Change> = sa
        .layer_performance
        .iter()
        .filter_map(|(name, la)| {
            let lb = sb.layer_performance.get(name)?;
            Some(change(
                name,
                Some(la.avg_duration_ms),
                Some(lb.avg_duration_ms),
                false,
                t,
            ))
        })
        .collect();
    let only = |x: &PerformanceSummary, y: &PerformanceSummary| {
        x.layer_performance
            .keys()
            .filter(|k| !y.layer_performance.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    let regressions = metrics
        .iter()
        .chain(&layers)
        .filter(|c| c.regression)
        .count();
    Ok(Comparison {
        pid_a: sa.pid,
        pid_b: sb.pid,
        threshold_percent,
        only_in_a: only(&sa, &sb),
        only_in_b: only(&sb, &sa),
        metrics,
        layers,
        regressions,
    })
}

/// The terminal table of `compare`.
pub fn render_comparison(c: &Comparison) -> String {
    let row = |ch: &Change| {
        vec![
            ch.name.clone(),
            ms(ch.a),
            ms(ch.b),
            ch.change_percent
                .map_or_else(|| "-".to_owned(), |p| format!("{p:+.1}%")),
            if ch.regression {
                "REGRESSION".to_owned()
            } else {
                String::new()
            },
        ]
    };
    let mut out = format!(
        "A: pid {}   B: pid {}   regression past {}%\n\n",
        c.pid_a, c.pid_b, c.threshold_percent
    );
    out += &table(
        &["metric", "A", "B", "change", ""],
        &c.metrics.iter().map(row).collect::<Vec<_>>(),
    );
    if !c.layers.is_empty() {
        out += "\n";
        out += &table(
            &["layer avg ms", "A", "B", "change", ""],
            &c.layers.iter().map(row).collect::<Vec<_>>(),
        );
    }
    for (label, names) in [("only in A", &c.only_in_a), ("only in B", &c.only_in_b)] {
        if !names.is_empty() {
            let _ = writeln!(out, "\n{label}: {}", names.join(", "));
        }
    }
    let _ = writeln!(out, "\n{} regression(s)", c.regressions);
    out
}
