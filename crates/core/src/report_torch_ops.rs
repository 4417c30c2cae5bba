//! The torch-op level in the report's shapes: `torch_op_performance` and `torch_op_windows` of
//! the summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use vllm_profiler_format as format;

use crate::torch_ops::{op_name as name_of, OpFigures, TorchOpBook, WindowOp};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn performance(f: &OpFigures) -> format::TorchOpPerformance {
    format::TorchOpPerformance {
        call_count: f.calls,
        host_time_ms: ms(f.host_ns),
        self_host_time_ms: ms(f.self_host_ns),
        avg_host_time_ms: if f.calls == 0 {
            0.0
        } else {
            ms(f.host_ns) / f.calls as f64
        },
        device_time_ms: f.device_ns.map(ms),
        self_device_time_ms: f.self_device_ns.map(ms),
        self_cpu_memory_bytes: f.self_cpu_memory_bytes,
        self_device_memory_bytes: f.self_device_memory_bytes,
    }
}

fn top(op: &WindowOp, names: &[Arc<str>]) -> format::TorchOpTop {
    format::TorchOpTop {
        name: name_of(op.name, names),
        call_count: op.figures.calls,
        self_host_time_ms: ms(op.figures.self_host_ns),
        host_time_ms: ms(op.figures.host_ns),
        self_device_time_ms: op.figures.self_device_ns.map(ms),
    }
}

/// Per op name over every window; `None` when no window ended.
pub(crate) fn torch_op_performance(
    book: &TorchOpBook,
    names: &[Arc<str>],
) -> Option<BTreeMap<String, format::TorchOpPerformance>> {
    (book.windows > 0).then(|| {
        (book.by_name.iter())
            .map(|(&name, figures)| (name_of(name, names), performance(figures)))
            .collect()
    })
}

/// The newest windows, oldest first; `None` when no window ended. `unix_at` turns a time of
/// the session's clock into Unix seconds.
pub(crate) fn torch_op_windows(
    book: &TorchOpBook,
    names: &[Arc<str>],
    unix_at: impl Fn(u64) -> f64,
) -> Option<Vec<format::TorchOpWindow>> {
    (book.windows > 0).then(|| {
        (book.recent.iter())
            .map(|w| format::TorchOpWindow {
                window: w.index,
                start_time: unix_at(w.start_ns),
                duration_ms: ms(w.end_ns.saturating_sub(w.start_ns)),
                steps: w.steps,
                op_names: w.op_names,
                trace_events: w.trace_events,
                dropped_trace_events: w.dropped_events,
                top_ops: w.top.iter().map(|op| top(op, names)).collect(),
            })
            .collect()
    })
}
