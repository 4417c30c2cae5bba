//! The kernel level in the report's shapes: `kernel_performance` of the summary and the kernel
//! fields of a step record.

use std::collections::BTreeMap;
use std::sync::Arc;

use vllm_profiler_format as format;

use crate::kernels::{KernelBook, StepKernels};
use crate::names::NameId;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Per kernel name; `None` when no kernel record ever came. `launches` is the shapes table,
/// where the tracer interned each launch configuration as JSON.
pub(crate) fn kernel_performance(
    book: &KernelBook,
    names: &[Arc<str>],
    launches: &[Arc<str>],
) -> Option<BTreeMap<String, format::KernelPerformance>> {
    if book.records == 0 {
        return None;
    }
    let entries = book.by_name.iter().filter(|(_, t)| t.count > 0);
    let performance = entries
        .filter_map(|(&name, totals)| {
            let name = if name == NameId::NONE {
                format::KernelPerformance::OTHER_KERNELS.to_owned()
            } else {
                names.get(name.0 as usize)?.to_string()
            };
            // hdrhistogram answers with the highest value of a bucket: keep it within the max.
            let p99 = totals.histogram.value_at_quantile(0.99).min(totals.max_ns);
            let launch = launches
                .get(totals.slowest_launch.0 as usize)
                .and_then(|text| serde_json::from_str(text).ok());
            Some((
                name,
                format::KernelPerformance {
                    call_count: totals.count,
                    total_duration_ms: ms(totals.total_ns),
                    avg_duration_ms: ms(totals.total_ns) / totals.count as f64,
                    p99_duration_ms: ms(p99),
                    max_duration_ms: ms(totals.max_ns),
                    graph_launches: totals.graph_count,
                    launch,
                },
            ))
        })
        .collect();
    Some(performance)
}

/// A step's `kernel_count`, `device_busy_ms` and `top_kernels`.
pub(crate) fn step_kernels(
    kernels: Option<&StepKernels>,
    names: &[Arc<str>],
) -> (u32, Option<f64>, Option<Vec<format::StepKernel>>) {
    let Some(kernels) = kernels.filter(|k| k.count > 0) else {
        return (0, None, None);
    };
    let top = kernels
        .top()
        .into_iter()
        .filter_map(|entry| {
            Some(format::StepKernel {
                name: names.get(entry.name.0 as usize)?.to_string(),
                call_count: entry.count,
                duration_ms: ms(entry.total_ns),
            })
        })
        .collect();
    (kernels.count, Some(ms(kernels.busy_ns)), Some(top))
}
