//! `vllm-profiler report DIR --html OUT.html`: one self-contained page (inline SVG plots drawn
//! with `plotters`, inline CSS, no script, nothing fetched) per run: for each process the
//! summary, the step-duration histogram, GPU utilization, memory and power over time per
//! device, and the layer table.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use vllm_profiler_format::{
    self as format, DetailedSteps, DeviceStats, GpuHistory, ProcessReport, RunReport,
};

use crate::input::read_json;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 260;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The largest figure an axis spans: plotters' tick search never ends on a range that
/// overflows (a report file may hold any finite number). Figures past it are drawn at it.
const AXIS_LIMIT: f64 = 1e15;

/// `value` kept within what an axis can span; `None` for NaN and infinities.
fn on_axis(value: f64) -> Option<f64> {
    value
        .is_finite()
        .then(|| value.clamp(-AXIS_LIMIT, AXIS_LIMIT))
}

/// A line chart of `points` (x: seconds from the first sample) as an SVG element.
fn line_chart(title: &str, unit: &str, points: &[(f64, f64)]) -> Result<String, String> {
    let points: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|&(x, y)| Some((on_axis(x)?, on_axis(y)?)))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-3);
        let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
        // Below 0 only when a figure is (every point must map inside the plot).
        let y_min = points.iter().map(|p| p.1).fold(0.0, f64::min) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The step-duration histogram (20 bins from 0 to the longest step) as an SVG element.
fn histogram(durations_ms: &[f64]) -> Result<String, String> {
    const BINS: usize = 20;
    let durations_ms: Vec<f64> = durations_ms.iter().filter_map(|&d| on_axis(d)).collect();
    let max = durations_ms.iter().copied().fold(0.0, f64::max).max(1e-3);
    let width = max / BINS as f64;
    let mut counts = [0u32; BINS];
    for &d in &durations_ms {
        counts[((d / width) as usize).min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Step duration", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..max, 0u32..top + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("steps")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &count)| {
                let x0 = i as f64 * width;
                Rectangle::new([(x0, 0), (x0 + width, count)], BLUE.mix(0.6).filled())
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The page for the reports in `dir` (already loaded as `run`).
pub fn render(dir: &Path, run: &RunReport) -> Result<String, String> {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>vllm-profiler report</title>\
         <style>body{font-family:sans-serif;margin:24px;color:#222}\
         table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;\
         text-align:right}td:first-child,th:first-child{text-align:left}\
         .plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>\n",
    );
    let _ = writeln!(
        page,
        "<h1>vllm-profiler report</h1><p>{}</p>",
        escape(&run.dir)
    );
    for group in &run.runs {
        let _ = writeln!(page, "<h2>Run {}</h2>", escape(&group.run_id));
        for p in &group.processes {
            render_process(&mut page, dir, p, &group.gpus)?;
        }
    }
    page += "</body></html>\n";
    Ok(page)
}

fn render_process(
    page: &mut String,
    dir: &Path,
    p: &ProcessReport,
    gpus: &[DeviceStats],
) -> Result<(), String> {
    {
        let s = &p.summary;
        let _ = writeln!(
            page,
            "<h3 id=\"pid-{pid}\">Process {pid} {label}</h3>\n<table class=\"summary\"><tr><th>steps</th>\
             <th>tokens</th><th>tokens/s</th><th>avg ms</th><th>p50 ms</th><th>p90 ms</th>\
             <th>p99 ms</th><th>max ms</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            s.total_steps,
            s.total_tokens,
            cell(s.tokens_per_second, 1),
            cell(s.avg_duration_ms, 3),
            cell(s.p50_duration_ms, 3),
            cell(s.p90_duration_ms, 3),
            cell(s.p99_duration_ms, 3),
            cell(s.max_duration_ms, 3),
            pid = p.pid,
            label = escape(&p.label),
        );
        *page += "<div class=\"plots\">\n";
        let steps: Option<DetailedSteps> =
            read_json(&dir.join(format::detailed_steps_file_name(p.pid))).ok();
        if let Some(steps) = steps.filter(|s| !s.detailed_steps.is_empty()) {
            let durations: Vec<f64> = steps.detailed_steps.iter().map(|s| s.duration_ms).collect();
            *page += &histogram(&durations)?;
        }
        let history: Option<GpuHistory> =
            read_json(&dir.join(format::gpu_history_file_name(p.pid))).ok();
        if let Some(history) = history {
            let start = history
                .gpu_history
                .iter()
                .map(|s| s.timestamp)
                .fold(f64::INFINITY, f64::min);
            // The run's devices, drawn where their samples came from.
            for device in gpus.iter().filter(|g| g.pid == p.pid) {
                let series = |value: &dyn Fn(&format::GpuSample) -> Option<f64>| {
                    history
                        .gpu_history
                        .iter()
                        .filter(|s| s.device_id == device.device_id)
                        .filter_map(|s| Some((s.timestamp - start, value(s)?)))
                        .collect::<Vec<_>>()
                };
                for (figure, unit, points) in [
                    ("utilization", "%", series(&|s| s.gpu_utilization)),
                    ("memory used", "MiB", series(&|s| s.memory_used_mb)),
                    ("power", "W", series(&|s| s.power_draw)),
                    // GPM (Hopper and newer): drawn only where the device gave them.
                    ("SM active (GPM)", "%", series(&|s| s.sm_active_percent)),
                    (
                        "SM occupancy (GPM)",
                        "%",
                        series(&|s| s.sm_occupancy_percent),
                    ),
                    (
                        "tensor active (GPM)",
                        "%",
                        series(&|s| s.tensor_active_percent),
                    ),
                    (
                        "DRAM bandwidth (GPM)",
                        "%",
                        series(&|s| s.dram_bandwidth_percent),
                    ),
                ] {
                    if points.is_empty() {
                        continue;
                    }
                    let title = format!("GPU {} {figure}", device.device_id);
                    *page += &line_chart(&title, unit, &points)?;
                }
            }
        }
        *page += "</div>\n";
        if !s.layer_performance.is_empty() {
            // Host time is the time to launch a layer's work; device time, where measured,
            // has columns of its own.
            let device = s
                .layer_performance
                .values()
                .any(|l| l.avg_gpu_duration_ms.is_some());
            *page += "<table class=\"layers\"><tr><th>layer</th><th>calls</th>\
                     <th>host avg ms</th><th>host total ms</th>";
            if device {
                *page += "<th>GPU avg ms</th><th>GPU total ms</th>";
            }
            *page += "</tr>\n";
            let mut layers: Vec<_> = s.layer_performance.iter().collect();
            layers.sort_by(|a, b| b.1.total_duration_ms.total_cmp(&a.1.total_duration_ms));
            for (name, l) in layers {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td>",
                    escape(name),
                    l.call_count,
                    l.avg_duration_ms,
                    l.total_duration_ms
                );
                if device {
                    let _ = write!(
                        page,
                        "<td>{}</td><td>{}</td>",
                        cell(l.avg_gpu_duration_ms, 3),
                        cell(l.total_gpu_duration_ms, 3)
                    );
                }
                *page += "</tr>\n";
            }
            *page += "</table>\n";
        }
    }
    Ok(())
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}
