//! `vllm-profiler compare A B`: the change of each figure from run A to run B, role by role
//! (the engine core with the engine core, each worker rank with its rank), with regressions
//! past a threshold flagged.

use std::fmt::Write as _;
use std::path::Path;

use vllm_profiler_format::{Change, Comparison, PerformanceSummary, RoleComparison};

use crate::input::read_json;
use crate::report::{ms, table};
use crate::runs;

/// The run of `path` to compare: a summary file (a run of one), or the latest run of a dir;
/// its id and, per role, its process with the most steps (in role order).
fn run_of(path: &Path) -> Result<(String, Vec<(String, PerformanceSummary)>), String> {
    let run = if path.is_file() {
        let summary: PerformanceSummary = read_json(path)?;
        runs::group(vec![summary]).pop()
    } else {
        runs::load(path)?.pop()
    }
    .ok_or_else(|| format!("no reports in {}", path.display()))?;
    let mut roles: Vec<(String, PerformanceSummary)> = Vec::new();
    for summary in run.members {
        let label = runs::label(&summary);
        match roles.iter_mut().find(|(l, _)| *l == label) {
            Some((_, kept)) if kept.total_steps >= summary.total_steps => {}
            Some((_, kept)) => *kept = summary,
            None => roles.push((label, summary)),
        }
    }
    Ok((run.run_id, roles))
}

fn change(name: &str, a: Option<f64>, b: Option<f64>, higher_is_better: bool, t: f64) -> Change {
    let ratio = match (a, b) {
        (Some(a), Some(b)) if a != 0.0 => Some((b - a) / a * 100.0),
        _ => None,
    };
    let regression = ratio.is_some_and(|c| if higher_is_better { c < -t } else { c > t });
    Change {
        name: name.to_owned(),
        a,
        b,
        // Past what a double holds (1e-300 to 1e300): no percent, the flag still says it.
        change_percent: ratio.filter(|c| c.is_finite()),
        higher_is_better,
        regression,
    }
}

/// Compares run A with run B (dirs or summary files), role by role.
pub fn compare(a: &Path, b: &Path, threshold_percent: f64) -> Result<Comparison, String> {
    let ((run_a, roles_a), (run_b, roles_b)) = (run_of(a)?, run_of(b)?);
    let only = |x: &[(String, PerformanceSummary)], y: &[(String, PerformanceSummary)]| {
        x.iter()
            .filter(|(l, _)| !y.iter().any(|(m, _)| m == l))
            .map(|(l, _)| l.clone())
            .collect::<Vec<_>>()
    };
    let roles: Vec<RoleComparison> = roles_a
        .iter()
        .filter_map(|(label, sa)| {
            let (_, sb) = roles_b.iter().find(|(l, _)| l == label)?;
            Some(compare_role(label, sa, sb, threshold_percent))
        })
        .collect();
    if roles.is_empty() {
        return Err(format!(
            "the runs have no role in common (A: {}; B: {})",
            roles_a
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            roles_b
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Comparison {
        run_a,
        run_b,
        threshold_percent,
        roles_only_in_a: only(&roles_a, &roles_b),
        roles_only_in_b: only(&roles_b, &roles_a),
        regressions: roles.iter().map(|r| r.regressions).sum(),
        roles,
    })
}

fn compare_role(
    role: &str,
    sa: &PerformanceSummary,
    sb: &PerformanceSummary,
    threshold_percent: f64,
) -> RoleComparison {
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
    RoleComparison {
        role: role.to_owned(),
        pid_a: sa.pid,
        pid_b: sb.pid,
        only_in_a: only(sa, sb),
        only_in_b: only(sb, sa),
        metrics,
        layers,
        regressions,
    }
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
        "A: run {}   B: run {}   regression past {}%\n",
        c.run_a, c.run_b, c.threshold_percent
    );
    for r in &c.roles {
        let _ = writeln!(out, "\n{}: A pid {}   B pid {}\n", r.role, r.pid_a, r.pid_b);
        out += &table(
            &["metric", "A", "B", "change", ""],
            &r.metrics.iter().map(row).collect::<Vec<_>>(),
        );
        if !r.layers.is_empty() {
            out += "\n";
            out += &table(
                &["layer avg ms", "A", "B", "change", ""],
                &r.layers.iter().map(row).collect::<Vec<_>>(),
            );
        }
        for (label, names) in [("only in A", &r.only_in_a), ("only in B", &r.only_in_b)] {
            if !names.is_empty() {
                let _ = writeln!(out, "\n{label}: {}", names.join(", "));
            }
        }
    }
    for (label, roles) in [
        ("roles only in A", &c.roles_only_in_a),
        ("roles only in B", &c.roles_only_in_b),
    ] {
        if !roles.is_empty() {
            let _ = writeln!(out, "\n{label}: {}", roles.join(", "));
        }
    }
    let _ = writeln!(out, "\n{} regression(s)", c.regressions);
    out
}
