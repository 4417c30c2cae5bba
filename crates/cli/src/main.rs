//! `vllm-profiler`: list the GPUs the agent would sample; read and compare reports.

mod compare;
mod gpus;
mod html;
mod input;
mod output;
mod recover;
mod report;
mod runs;
mod trace;
mod watchdog;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vllm_profiler_gpu::Options;

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
    /// Print the GPUs as a table (utilization, memory, temperature, power, clocks), found by
    /// the same detector chain as the agent: amd-smi, then NVML, else "no GPU found" and the
    /// host. --json gives the GPU list JSON ({"gpus": [...], "total": n, "detector": "..."}).
    Gpus(gpus::GpusArgs),
    /// Print a run's reports as tables: the summary, the top layers, and GPU min/avg/max per
    /// device, for each process that wrote reports in DIR. Processes that ended without their
    /// final export (killed) get their reports from their journals first, as `recover` does.
    Report(ReportArgs),
    /// Write the reports of processes that ended without their final export (SIGKILL, or
    /// vLLM's engine shutdown) from the crash-safe journal each one keeps in DIR, then remove
    /// the journals. A process still running is left alone, unless --force.
    Recover(RecoverArgs),
    /// Compare run A with run B (report dirs, or summary files), role by role: the change of
    /// each metric and of each layer's mean duration, with regressions past a threshold
    /// flagged. Of a dir with several runs, its latest.
    Compare(CompareArgs),
    /// Merge the traces of every process of a run in DIR into one Chrome trace, on one clock
    /// (Unix microseconds), processes named by role, each device's GPU counters once.
    /// Processes that ended without their final export get their reports from their journals
    /// first, as `recover` does.
    Trace(TraceArgs),
    /// The idle-GPU watchdog: after IDLE_LIMIT checks in a row with GPU utilization
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
struct TraceArgs {
    /// The output dir of a profiled run.
    dir: PathBuf,
    /// Where to write the merged trace.
    #[arg(short, long, value_name = "OUT.json")]
    output: PathBuf,
    /// The run to merge, when DIR holds several (`report` lists them); default: the latest.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gpus(args) => gpus::run(args),
        Command::Report(args) => report_command(args),
        Command::Trace(args) => trace_command(args),
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

/// The reports of killed processes first, so that a command that reads the dir has them; a
/// dir that cannot be read is said by what reads it next.
fn recover_first(dir: &std::path::Path) {
    for outcome in recover::recover_dir(dir, false).unwrap_or_default() {
        if !matches!(outcome.what, recover::Recovery::Running) {
            eprintln!("vllm-profiler: {}", recover::describe(&outcome));
        }
    }
}

fn trace_command(args: TraceArgs) -> Result<(), String> {
    recover_first(&args.dir);
    // Where the trace lands, links followed: never over one of the run's own files.
    let destination = output::resolve(&args.output)?;
    output::refuse_run_file(&args.dir, &destination)?;
    let merged = trace::merge(&args.dir, args.run.as_deref())?;
    for note in &merged.notes {
        eprintln!("vllm-profiler: {note}");
    }
    let written = output::write(&destination, |w| {
        serde_json::to_writer(w, &merged.trace).map_err(std::io::Error::other)
    })?;
    let said = format!(
        "wrote {}: run {}, {} process(es)",
        args.output.display(),
        merged.run_id,
        merged.processes
    );
    match written {
        output::Written::Replaced => println!("{said}"),
        output::Written::InPlace => eprintln!("vllm-profiler: {said}"),
    }
    Ok(())
}

fn report_command(args: ReportArgs) -> Result<(), String> {
    recover_first(&args.dir);
    let (run, notes) = report::load(&args.dir)?;
    for note in &notes {
        eprintln!("vllm-profiler: {note}");
    }
    if let Some(out) = &args.html {
        let page = html::render(&args.dir, &run)?;
        let destination = output::resolve(out)?;
        output::refuse_run_file(&args.dir, &destination)?;
        output::write(&destination, |w| w.write_all(page.as_bytes()))?;
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
    let comparison = compare::compare(&args.a, &args.b, args.threshold)?;
    if args.json {
        let text = serde_json::to_string_pretty(&comparison).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", compare::render_comparison(&comparison));
    }
    Ok(args.fail_on_regression && comparison.regressions > 0)
}
