//! `vllm-profiler watchdog`: the idle-GPU watchdog. Every check it reads the GPUs'
//! utilization through the detector chain (the busiest device counts) and, optionally, a
//! Prometheus counter of requests; a check is idle when the utilization is under the threshold
//! and the counter did not grow. After `--idle-limit` idle checks in a row, and never before
//! `--min-runtime`, it runs the user's command once (a pod or container stop). If the command
//! fails it resets the count and keeps watching; if it succeeds, it exits.
//! Every decision is one log line on stderr.

use std::process::Command;
use std::time::{Duration, Instant};

use vllm_profiler_gpu::Options;

/// What the watchdog is told.
pub struct Watch {
    pub idle_threshold: f64,
    pub check_interval: Duration,
    pub idle_limit: u32,
    pub min_runtime: Duration,
    pub requests_url: Option<String>,
    pub requests_metric: String,
    pub dry_run: bool,
    /// Stop after this many checks (tests, and bounded runs); `None`: until the command ran.
    pub max_checks: Option<u64>,
    pub command: Vec<String>,
    pub gpu: Options,
}

fn log(message: &str) {
    eprintln!("vllm-profiler watchdog: {message}");
}

/// The sum of every sample of `metric` (any labels) in a Prometheus text exposition.
pub fn counter_sum(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        // The name must end here: `metric{...} v` or `metric v`, not `metric_other v`.
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.split_once('}').map(|(_, after)| after)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn fetch_requests(url: &str, metric: &str) -> Result<f64, String> {
    let body = ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| format!("cannot read {url}: {e}"))?
        .into_string()
        .map_err(|e| format!("cannot read {url}: {e}"))?;
    counter_sum(&body, metric).ok_or_else(|| format!("{url} has no {metric}"))
}

/// Runs the watchdog; `Ok(())` once the command ran successfully (or would have, dry run), or
/// after `max_checks`.
pub fn run(watch: &Watch) -> Result<(), String> {
    if watch.command.is_empty() && !watch.dry_run {
        return Err("give the command to run after `--`, or --dry-run".to_owned());
    }
    let mut detection = vllm_profiler_gpu::detect(&watch.gpu);
    for warning in &detection.warnings {
        log(warning);
    }
    log(&format!(
        "watching {} GPU(s) through {}: idle below {}% for {} checks of {:?}, not before {:?}",
        detection.backend.as_ref().map_or(0, |b| b.devices().len()),
        detection.detector_name(),
        watch.idle_threshold,
        watch.idle_limit,
        watch.check_interval,
        watch.min_runtime
    ));
    let started = Instant::now();
    let mut idle_count = 0u32;
    let mut last_requests: Option<f64> = None;
    let mut samples = Vec::new();
    let mut check = 0u64;
    loop {
        check += 1;
        samples.clear();
        let utilization = detection.backend.as_mut().and_then(|backend| {
            backend.sample(vllm_profiler_format::unix_now(), &mut samples);
            samples
                .iter()
                .filter_map(|s| s.gpu_utilization)
                .fold(None, |max: Option<f64>, u| {
                    Some(max.map_or(u, |m| m.max(u)))
                })
        });
        let requests_grew = match &watch.requests_url {
            None => false,
            Some(url) => match fetch_requests(url, &watch.requests_metric) {
                Ok(total) => {
                    let grew = last_requests.is_some_and(|last| total > last);
                    last_requests = Some(total);
                    grew
                }
                Err(err) => {
                    log(&format!("check {check}: {err}; not counted as activity"));
                    false
                }
            },
        };
        match utilization {
            None => log(&format!(
                "check {check}: no GPU utilization could be read; not counted"
            )),
            Some(u) if u < watch.idle_threshold && !requests_grew => {
                idle_count += 1;
                log(&format!(
                    "check {check}: GPU {u}% < {}%, no new requests: idle {idle_count}/{}",
                    watch.idle_threshold, watch.idle_limit
                ));
            }
            Some(u) => {
                let why = if requests_grew {
                    "requests came in".to_owned()
                } else {
                    format!("GPU {u}% >= {}%", watch.idle_threshold)
                };
                if idle_count > 0 {
                    log(&format!("check {check}: {why}: active, idle count reset"));
                } else {
                    log(&format!("check {check}: {why}: active"));
                }
                idle_count = 0;
            }
        }
        if idle_count >= watch.idle_limit {
            let elapsed = started.elapsed();
            if elapsed < watch.min_runtime {
                log(&format!(
                    "check {check}: idle limit reached, but the minimum runtime is not: \
                     {:.1} s of {:.1} s; not acting",
                    elapsed.as_secs_f64(),
                    watch.min_runtime.as_secs_f64()
                ));
            } else if watch.dry_run {
                log(&format!(
                    "check {check}: idle limit reached after {:.1} s; dry run: would run {:?}",
                    elapsed.as_secs_f64(),
                    watch.command
                ));
                return Ok(());
            } else {
                log(&format!(
                    "check {check}: idle limit reached after {:.1} s: running {:?}",
                    elapsed.as_secs_f64(),
                    watch.command
                ));
                match Command::new(&watch.command[0])
                    .args(&watch.command[1..])
                    .status()
                {
                    Ok(status) if status.success() => {
                        log(&format!("check {check}: the command succeeded; done"));
                        return Ok(());
                    }
                    Ok(status) => log(&format!(
                        "check {check}: the command failed ({status}); idle count reset, \
                         watching on"
                    )),
                    Err(err) => log(&format!(
                        "check {check}: cannot run the command ({err}); idle count reset, \
                         watching on"
                    )),
                }
                idle_count = 0;
            }
        }
        if watch.max_checks.is_some_and(|max| check >= max) {
            log(&format!("stopping after {check} checks"));
            return Ok(());
        }
        std::thread::sleep(watch.check_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_labels_and_ignore_other_names() {
        let text = "# TYPE vllm:request_success counter\n\
                    vllm:request_success_total{finished_reason=\"stop\"} 3\n\
                    vllm:request_success_total{finished_reason=\"length\"} 2.5\n\
                    vllm:request_success_total_other 100\n\
                    vllm:request_success_created 7\n";
        assert_eq!(counter_sum(text, "vllm:request_success_total"), Some(5.5));
        assert_eq!(counter_sum("requests 4\n", "requests"), Some(4.0));
        assert_eq!(counter_sum("other 4\n", "requests"), None);
    }
}
