//! `vllm-profiler gpus`: the devices the agent would sample, as a table (once, or refreshed
//! every few seconds with `--watch`), or as the GPU list JSON for scripts (`--json`). Without
//! a GPU the table says so and shows the host under its own heading, never as a GPU; the JSON
//! keeps the contract's CPU entry.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use vllm_profiler_format::GpuSample;
use vllm_profiler_gpu::{CpuProbe, Detection, Options};

#[derive(Args)]
pub struct GpusArgs {
    /// Print the GPU list as JSON (`gpus`, `total`, `detector`; without a GPU, the host's
    /// entry), for scripts, instead of the table.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Refresh the table every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    watch: Option<f64>,
    /// With --watch: stop after this many tables (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
    /// NVML library to load instead of libnvidia-ml.so.1.
    #[arg(long, env = "VLLM_PROFILING_NVML_LIBRARY", value_name = "PATH")]
    nvml_library: Option<PathBuf>,
    /// amd-smi library to load instead of libamd_smi.so.
    #[arg(long, env = "VLLM_PROFILING_AMDSMI_LIBRARY", value_name = "PATH")]
    amdsmi_library: Option<PathBuf>,
    /// Comma-separated device indices to show (default: all).
    #[arg(long, env = "VLLM_PROFILING_DEVICES", value_name = "LIST", value_parser = parse_devices)]
    devices: Option<DeviceList>,
}

#[derive(Clone)]
/// `None`: every device (`all`, as the agent reads the variable).
pub struct DeviceList(Option<Vec<u32>>);

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.05..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected seconds between 0.05 and 86400, got {text:?}"
        )),
    }
}

fn parse_devices(text: &str) -> Result<DeviceList, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(DeviceList(None));
    }
    text.split(',')
        .map(|part| part.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map(|indices| DeviceList(Some(indices)))
        .map_err(|_| format!("expected comma-separated device indices, got {text:?}"))
}

/// `vllm-profiler gpus`: the devices as a table, as JSON, or as a table refreshed until stopped.
pub fn run(args: GpusArgs) -> Result<(), String> {
    let options = Options {
        nvml_library: args.nvml_library,
        amdsmi_library: args.amdsmi_library,
        devices: args.devices.and_then(|d| d.0),
    };
    let mut detection = vllm_profiler_gpu::detect(&options);
    if !detection.warnings.is_empty() {
        // The user named a library that does not load: say so rather than list other devices.
        return Err(detection.warnings.join("; "));
    }
    let mut cpu = CpuProbe::default();
    match args.watch {
        None if args.json => {
            let list = vllm_profiler_gpu::gpu_list(&mut detection, &mut cpu);
            print_backend_warnings(&mut detection);
            let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{text}").and_then(|_| out.flush()) {
                // A closed pipe (`| head`) ends it quietly.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(format!("cannot write to stdout: {e}"))
                }
                _ => Ok(()),
            }
        }
        None => watch(&mut detection, &mut cpu, 0.0, Some(1)),
        Some(seconds) => watch(&mut detection, &mut cpu, seconds, args.count),
    }
}

fn print_backend_warnings(detection: &mut Detection) {
    if let Some(backend) = detection.backend.as_mut() {
        for warning in backend.take_warnings() {
            eprintln!("vllm-profiler: {warning}");
        }
    }
}

fn watch(
    detection: &mut Detection,
    cpu: &mut CpuProbe,
    seconds: f64,
    count: Option<u64>,
) -> Result<(), String> {
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let table = table(detection, cpu);
        print_backend_warnings(detection);
        let mut out = std::io::stdout().lock();
        let clear = if terminal && count != Some(1) {
            "\x1b[H\x1b[2J"
        } else {
            ""
        };
        // A closed pipe (`| head`) ends the watch quietly.
        if writeln!(out, "{clear}{table}")
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(());
        }
        shown += 1;
        if count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
    }
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

const COLUMNS: [&str; 9] = [
    "IDX",
    "NAME",
    "TYPE",
    "UTIL %",
    "MEM CTRL %",
    "MEMORY USED/TOTAL",
    "TEMP °C",
    "POWER W",
    "SM MHz",
];

fn row(cells: [&str; 9]) -> String {
    format!(
        "{:>3}  {:<28}  {:<6}  {:>6}  {:>10}  {:>19}  {:>7}  {:>8}  {:>7}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7], cells[8]
    )
}

/// The table, once: every device's figures now; without a GPU, a line that says so and the
/// host under its own heading.
fn table(detection: &mut Detection, cpu: &mut CpuProbe) -> String {
    let mut lines = vec![format!(
        "{}  detector: {}",
        time_of_day(),
        detection.detector_name()
    )];
    match detection.backend.as_mut() {
        None => {
            let e = cpu.entry();
            lines.push("no GPU found".to_owned());
            lines.push(String::new());
            lines.push("host".to_owned());
            lines.push(format!(
                "{:<28}  {:>6}  {:>19}",
                "NAME", "CPU %", "MEMORY USED/TOTAL"
            ));
            let memory = format!(
                "{}/{} MiB",
                e.used_memory_mb.map_or("-".into(), |v| v.to_string()),
                e.total_memory_mb.map_or("-".into(), |v| v.to_string())
            );
            lines.push(format!(
                "{:<28}  {:>6}  {:>19}",
                truncate(&e.name, 28),
                cell(e.utilization_percent, 1),
                memory
            ));
        }
        Some(backend) => {
            lines.push(row(COLUMNS));
            let mut samples: Vec<GpuSample> = Vec::new();
            backend.sample(vllm_profiler_format::unix_now(), &mut samples);
            for (device, s) in backend.devices().iter().zip(&samples) {
                let memory = format!(
                    "{}/{} MiB",
                    cell(s.memory_used_mb, 0),
                    cell(s.memory_total_mb, 0)
                );
                lines.push(row([
                    &device.index.to_string(),
                    &truncate(device.name.as_deref().unwrap_or("?"), 28),
                    &device.gpu_type.to_string(),
                    &cell(s.gpu_utilization, 0),
                    &cell(s.memory_controller_utilization, 0),
                    &memory,
                    &cell(s.temperature, 0),
                    &cell(s.power_draw, 1),
                    &cell(s.sm_clock_mhz, 0),
                ]));
            }
        }
    }
    lines.join("\n")
}

fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// UTC time of day, `HH:MM:SS`.
fn time_of_day() -> String {
    let secs = vllm_profiler_format::unix_now() as u64 % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
