//! `vllm-profiler`: list the GPUs the agent would sample; read and compare reports.

mod html;
mod input;
mod recover;
mod report;
mod watchdog;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vllm_profiler_format::GpuSample;
use vllm_profiler_gpu::{CpuProbe, Detection, Options};

#[derive(Parser)]
#[command(
    name = "vllm-profiler",
    version,
    about = "vLLM profiler: GPUs and reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print seed 001's GPU list as JSON ({"gpus": [...], "total": n, "detector": "..."}),
    /// found by the same detector chain as the agent: amd-smi, then NVML, then the CPU.
    Gpus(GpusArgs),
    /// Print a run's reports as tables: the summary, the top layers, and GPU min/avg/max per
    /// device, for each process that wrote reports in DIR. Processes that ended without their
    /// final export (killed) get their reports from their journals first, as `recover` does.
    Report(ReportArgs),
    /// Write the reports of processes that ended without their final export (SIGKILL, or
    /// vLLM's engine shutdown) from the crash-safe journal each one keeps in DIR, then remove
    /// the journals. A process still running is left alone, unless --force.
    Recover(RecoverArgs),
    /// Compare run A with run B (report dirs, or summary files): the change of each metric and
    /// of each layer's mean duration, with regressions past a threshold flagged.
    Compare(CompareArgs),
    /// Seed 003's idle-GPU watchdog: after IDLE_LIMIT checks in a row with GPU utilization
    /// under IDLE_THRESHOLD % (and no new requests), and not before MIN_RUNTIME seconds, run
    /// COMMAND once (for example a pod stop). A failed command resets the count.
    Watchdog(WatchdogArgs),
}

#[derive(Args)]
struct WatchdogArgs {
    /// Utilization (percent, busiest GPU) under which a check is idle.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    idle_threshold: f64,
    /// Seconds between checks.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = parse_seconds)]
    check_interval: f64,
    /// Idle checks in a row before acting.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    idle_limit: u32,
    /// Seconds from the start before which it never acts.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS", value_parser = parse_seconds)]
    min_runtime: f64,
    /// A Prometheus /metrics URL whose request counter growing counts as activity.
    #[arg(long, value_name = "URL")]
    requests_url: Option<String>,
    /// The counter read at --requests-url (summed over its labels).
    #[arg(
        long,
        default_value = "vllm:request_success_total",
        value_name = "NAME"
    )]
    requests_metric: String,
    /// Log what it would do instead of running the command.
    #[arg(long)]
    dry_run: bool,
    /// Stop after this many checks.
    #[arg(long, value_name = "N")]
    max_checks: Option<u64>,
    /// NVML library to load instead of libnvidia-ml.so.1.
    #[arg(long, env = "VLLM_PROFILING_NVML_LIBRARY", value_name = "PATH")]
    nvml_library: Option<PathBuf>,
    /// amd-smi library to load instead of libamd_smi.so.
    #[arg(long, env = "VLLM_PROFILING_AMDSMI_LIBRARY", value_name = "PATH")]
    amdsmi_library: Option<PathBuf>,
    /// The command to run once the GPUs stayed idle, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=31_536_000.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected seconds between 0 and 31536000, got {text:?}"
        )),
    }
}

#[derive(Args)]
struct ReportArgs {
    /// The output dir of a profiled run.
    dir: PathBuf,
    /// Print the same as JSON, for scripts.
    #[arg(long)]
    json: bool,
    /// Also write one self-contained HTML page with plots (GPU utilization, memory and power
    /// over time, the step-duration histogram, the layer table).
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

#[derive(Args)]
struct RecoverArgs {
    /// The output dir of a profiled run.
    dir: PathBuf,
    /// Also write the reports of processes that still run (their next export replaces them).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// The baseline run: a report dir (its process with the most steps) or a summary file.
    a: PathBuf,
    /// The run to judge against it.
    b: PathBuf,
    /// Percent by which a figure may get worse before it is a regression.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    threshold: f64,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
    /// Exit with status 2 when there is a regression.
    #[arg(long)]
    fail_on_regression: bool,
}

#[derive(Args)]
struct GpusArgs {
    /// Refresh a table of every device every SECONDS instead of printing JSON once.
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
struct DeviceList(Option<Vec<u32>>);

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gpus(args) => gpus(args),
        Command::Report(args) => report_command(args),
        Command::Recover(args) => recover_command(args),
        Command::Watchdog(args) => watchdog::run(&watchdog::Watch {
            idle_threshold: args.idle_threshold,
            check_interval: Duration::from_secs_f64(args.check_interval),
            idle_limit: args.idle_limit,
            min_runtime: Duration::from_secs_f64(args.min_runtime),
            requests_url: args.requests_url,
            requests_metric: args.requests_metric,
            dry_run: args.dry_run,
            max_checks: args.max_checks,
            command: args.command,
            gpu: Options {
                nvml_library: args.nvml_library,
                amdsmi_library: args.amdsmi_library,
                devices: None,
            },
        }),
        Command::Compare(args) => match compare_command(args) {
            Ok(true) => return ExitCode::from(2),
            other => other.map(drop),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vllm-profiler: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn recover_command(args: RecoverArgs) -> Result<(), String> {
    let outcomes = recover::recover_dir(&args.dir, args.force)?;
    if outcomes.is_empty() {
        println!("no journals in {}: nothing to recover", args.dir.display());
    }
    for outcome in &outcomes {
        println!("{}", recover::describe(outcome));
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.what, recover::Recovery::Failed(_)))
        .count();
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} journal(s) could not be recovered")),
    }
}

fn report_command(args: ReportArgs) -> Result<(), String> {
    // The reports of killed processes first, so that they are in the tables; a dir that
    // cannot be read is said by `load` below.
    for outcome in recover::recover_dir(&args.dir, false).unwrap_or_default() {
        if !matches!(outcome.what, recover::Recovery::Running) {
            eprintln!("vllm-profiler: {}", recover::describe(&outcome));
        }
    }
    let run = report::load(&args.dir)?;
    if let Some(out) = &args.html {
        let page = html::render(&args.dir, &run)?;
        std::fs::write(out, page).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&run).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report::render(&run));
    }
    Ok(())
}

/// `Ok(true)`: there are regressions and the caller asked to fail on them.
fn compare_command(args: CompareArgs) -> Result<bool, String> {
    if !args.threshold.is_finite() || args.threshold < 0.0 {
        return Err(format!(
            "--threshold must be a percent >= 0, got {}",
            args.threshold
        ));
    }
    let comparison = report::compare(&args.a, &args.b, args.threshold)?;
    if args.json {
        let text = serde_json::to_string_pretty(&comparison).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report::render_comparison(&comparison));
    }
    Ok(args.fail_on_regression && comparison.regressions > 0)
}

fn gpus(args: GpusArgs) -> Result<(), String> {
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
        None => {
            let list = vllm_profiler_gpu::gpu_list(&mut detection, &mut cpu);
            print_backend_warnings(&mut detection);
            let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
            println!("{text}");
            Ok(())
        }
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
        let clear = if terminal { "\x1b[H\x1b[2J" } else { "" };
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

/// One refresh of the watch table.
fn table(detection: &mut Detection, cpu: &mut CpuProbe) -> String {
    let header = format!(
        "{:>3}  {:<28} {:<6} {:>6} {:>6} {:>19} {:>6} {:>8} {:>9}",
        "IDX", "NAME", "TYPE", "UTIL%", "MEMC%", "MEMORY USED/TOTAL", "TEMP", "POWER W", "SM MHz"
    );
    let mut lines = vec![
        format!("{}  detector: {}", time_of_day(), detection.detector_name()),
        header,
    ];
    match detection.backend.as_mut() {
        None => {
            let e = cpu.entry();
            let memory = format!(
                "{}/{} MiB",
                e.used_memory_mb.map_or("-".into(), |v| v.to_string()),
                e.total_memory_mb.map_or("-".into(), |v| v.to_string())
            );
            lines.push(format!(
                "{:>3}  {:<28} {:<6} {:>6} {:>6} {:>19} {:>6} {:>8} {:>9}",
                e.index,
                truncate(&e.name, 28),
                e.gpu_type,
                cell(e.utilization_percent, 1),
                "-",
                memory,
                "-",
                "-",
                "-"
            ));
        }
        Some(backend) => {
            let mut samples: Vec<GpuSample> = Vec::new();
            backend.sample(vllm_profiler_format::unix_now(), &mut samples);
            for (device, s) in backend.devices().iter().zip(&samples) {
                let memory = format!(
                    "{}/{} MiB",
                    cell(s.memory_used_mb, 0),
                    cell(s.memory_total_mb, 0)
                );
                lines.push(format!(
                    "{:>3}  {:<28} {:<6} {:>6} {:>6} {:>19} {:>6} {:>8} {:>9}",
                    device.index,
                    truncate(device.name.as_deref().unwrap_or("?"), 28),
                    device.gpu_type,
                    cell(s.gpu_utilization, 0),
                    cell(s.memory_controller_utilization, 0),
                    memory,
                    cell(s.temperature, 0),
                    cell(s.power_draw, 1),
                    cell(s.sm_clock_mhz, 0)
                ));
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
