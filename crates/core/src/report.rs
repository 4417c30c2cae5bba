//! The report mapping: what the collector and the sample store hold, in the shapes of
//! `vllm_profiler_format` (the summary, the detailed steps, the GPU history, the trace, and
//! the metrics endpoint's snapshot). Names stay ids until here.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vllm_profiler_format as format;

use crate::aggregates::Aggregates;
use crate::collector::Collector;
use crate::error::Result;
use crate::event::NO_ENGINE_STEP;
use crate::event::NO_GPU_TIME;
use crate::kept::KeptStep;
use crate::names::NameId;
use crate::samples::SampleStore;
use crate::session::Session;
use crate::step_gpm::GpmTimeline;
use crate::trace::{self, TraceRecords, TraceStep};

/// A figure that came in as `f32` (memory deltas), summed or averaged in `f64`, given back
/// with `f32` precision: its shortest decimal, so that 64.2 reads 64.2 and not
/// 64.19999694824219.
pub(crate) fn f32_precision(v: f64) -> f64 {
    let single = v as f32;
    if !single.is_finite() {
        return v;
    }
    single.to_string().parse().unwrap_or(v)
}

/// The shapes table as an export sees it: each canonical text parsed once, when first needed.
pub(crate) struct ShapesTable {
    texts: Vec<Arc<str>>,
    parsed: Vec<std::cell::OnceCell<Option<format::SpanShapes>>>,
}

impl ShapesTable {
    pub(crate) fn new(texts: Vec<Arc<str>>) -> Self {
        let parsed = texts.iter().map(|_| std::cell::OnceCell::new()).collect();
        ShapesTable { texts, parsed }
    }

    fn get(&self, id: NameId) -> Option<&format::SpanShapes> {
        let i = id.0 as usize;
        let text = self.texts.get(i)?;
        self.parsed[i]
            .get_or_init(|| crate::shapes::parse(text))
            .as_ref()
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A device time in milliseconds; `None` when it was never set.
fn gpu_ms(ns: u64) -> Option<f64> {
    (ns != NO_GPU_TIME).then(|| ms(ns))
}

fn finite(v: f32) -> Option<f64> {
    (!v.is_nan()).then_some(f64::from(v))
}

impl Session {
    /// The performance summary over every step ever recorded, or over the last `n` kept steps.
    pub fn summary(&self, last_n_steps: Option<u64>) -> Result<format::PerformanceSummary> {
        let mut collector = self.lock_collector()?;
        collector.drain();
        Ok(self.summary_locked(&collector, last_n_steps))
    }

    pub(crate) fn summary_locked(
        &self,
        collector: &Collector,
        last_n_steps: Option<u64>,
    ) -> format::PerformanceSummary {
        let names = self.interner.snapshot();
        // One look at the sample store: its detector and what its histories let go.
        let (detector, dropped_samples) = {
            let store = self.samples.lock();
            (store.detector.map(str::to_owned), store.dropped())
        };
        let window;
        let totals = match last_n_steps {
            None => &collector.kept.totals,
            Some(n) => {
                let mut agg = Aggregates::new();
                for kept in collector.kept.history.last(n as usize) {
                    agg.add_step(&kept.event);
                    for layer in kept.layers.iter() {
                        agg.add_layer(
                            layer.name,
                            u64::from(layer.calls),
                            layer.total_ns,
                            (u64::from(layer.memory_calls), layer.memory_delta_mb),
                        );
                        if layer.gpu_ns != NO_GPU_TIME {
                            let timed = u64::from(layer.gpu_calls);
                            agg.add_layer_gpu(layer.name, timed, layer.gpu_ns);
                        }
                    }
                }
                window = agg;
                &window
            }
        };
        let steps = totals.total_steps;
        let any = steps > 0;
        // hdrhistogram answers with the highest value of a bucket: keep it within [min, max].
        let quantile = |q: f64| {
            any.then(|| {
                let v = totals.histogram.value_at_quantile(q);
                ms(v.max(totals.min_ns).min(totals.max_ns))
            })
        };
        let window_ns = totals.last_end_ns.saturating_sub(totals.first_start_ns);
        let window_seconds = (any && window_ns > 0).then(|| window_ns as f64 / 1e9);
        let layer_performance = totals
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.calls > 0)
            .filter_map(|(i, l)| {
                let name = names.get(i)?;
                Some((
                    name.to_string(),
                    format::LayerPerformance {
                        avg_duration_ms: ms(l.total_ns) / l.calls as f64,
                        call_count: l.calls,
                        total_duration_ms: ms(l.total_ns),
                        avg_memory_delta_mb: (l.memory_calls > 0)
                            .then(|| f32_precision(l.memory_delta_mb / l.memory_calls as f64)),
                        avg_gpu_duration_ms: (l.gpu_calls > 0)
                            .then(|| ms(l.gpu_ns) / l.gpu_calls as f64),
                        total_gpu_duration_ms: (l.gpu_calls > 0).then(|| ms(l.gpu_ns)),
                    },
                ))
            })
            .collect();
        let c = &self.counters;
        let (role, rank) = self.identity();
        let run = self.run();
        format::PerformanceSummary {
            schema_version: format::SCHEMA_VERSION,
            pid: self.pid,
            role,
            rank,
            run_id: run.run_id,
            parent_pid: run.parent_pid,
            started_unix: Some(self.started_unix),
            generated_at: self.clock.unix_now(),
            export: None,
            last_n_steps,
            total_steps: steps,
            empty_steps: totals.empty_steps,
            avg_duration_ms: any.then(|| totals.total_ns as f64 / 1e6 / steps as f64),
            min_duration_ms: any.then(|| ms(totals.min_ns)),
            max_duration_ms: any.then(|| ms(totals.max_ns)),
            p50_duration_ms: quantile(0.50),
            p90_duration_ms: quantile(0.90),
            p99_duration_ms: quantile(0.99),
            total_tokens: totals.total_tokens,
            total_batch_size: totals.total_batch,
            tokens_per_second: window_seconds.map(|w| totals.total_tokens as f64 / w),
            window_seconds,
            avg_memory_mb: (totals.memory_count > 0)
                .then(|| totals.memory_sum / totals.memory_count as f64),
            max_memory_mb: (totals.memory_count > 0).then_some(totals.memory_max),
            memory_source: self.latest.memory_source(),
            detector,
            layer_performance,
            kernel_performance: crate::report_kernels::kernel_performance(
                &collector.kept.totals.kernels,
                &names,
                &self.shapes.snapshot(),
            ),
            torch_op_performance: crate::report_torch_ops::torch_op_performance(
                &collector.kept.torch_ops,
                &names,
            ),
            torch_op_windows: crate::report_torch_ops::torch_op_windows(
                &collector.kept.torch_ops,
                &names,
                |ns| self.unix_at(ns),
            ),
            counters: format::Counters {
                kept_steps: collector.kept.history.len() as u64,
                dropped_steps: collector.kept.history.dropped(),
                dropped_samples,
                lost_events: c.lost_events.load(Ordering::Relaxed),
                auto_closed_spans: c.auto_closed_spans.load(Ordering::Relaxed),
                unfinished_steps: c.unfinished_steps.load(Ordering::Relaxed),
                unfinished_spans: c.unfinished_spans.load(Ordering::Relaxed),
                total_spans: totals.total_spans,
                unmatched_gpu_durations: totals.unmatched_gpu_times,
                kernel_records: collector.kept.totals.kernels.records,
                unattributed_kernels: collector.kept.totals.kernels.unattributed,
                dropped_kernel_records: c.dropped_kernel_records.load(Ordering::Relaxed),
                lost_kernel_records: c.lost_kernel_records.load(Ordering::Relaxed),
                torch_op_windows: collector.kept.torch_ops.windows,
                dropped_torch_op_events: collector.kept.torch_ops.dropped_events,
                lost_torch_op_windows: c.lost_torch_op_windows.load(Ordering::Relaxed),
            },
        }
    }

    /// What a metrics endpoint serves, read at one scrape: totals over every step, the step
    /// durations counted into the buckets whose upper bounds (seconds, ascending) are given,
    /// and the newest sample of each device.
    pub fn metrics_snapshot(&self, bucket_bounds_s: &[f64]) -> Result<format::MetricsSnapshot> {
        let mut collector = self.lock_collector()?;
        collector.drain();
        let totals = &collector.kept.totals;
        let mut step_buckets = Vec::with_capacity(bucket_bounds_s.len() + 1);
        let mut counted = 0;
        for &bound in bucket_bounds_s {
            // hdrhistogram keeps 3 significant digits: a step within 0.1 % of a bound may be
            // counted on either side of it.
            let at_most = if totals.total_steps == 0 {
                0
            } else {
                totals
                    .histogram
                    .count_between(0, (bound * 1e9) as u64)
                    .max(counted)
            };
            step_buckets.push(at_most - counted);
            counted = at_most;
        }
        step_buckets.push(totals.total_steps.saturating_sub(counted));
        let store = self.samples.lock();
        let (role, rank) = self.identity();
        Ok(format::MetricsSnapshot {
            pid: self.pid(),
            role,
            rank,
            total_steps: totals.total_steps,
            total_tokens: totals.total_tokens,
            step_seconds_sum: totals.total_ns as f64 / 1e9,
            step_buckets,
            dropped_steps: collector.kept.history.dropped(),
            dropped_samples: store.dropped(),
            lost_events: self.counters.lost_events.load(Ordering::Relaxed),
            devices: store.described_devices.clone(),
            latest_samples: store
                .devices
                .iter()
                .filter_map(|(_, history)| history.iter().next_back().cloned())
                .collect(),
        })
    }

    /// One kept step as its report record.
    pub(crate) fn step_record(
        &self,
        kept: &KeptStep,
        names: &[Arc<str>],
        shapes: &ShapesTable,
        gpm: &GpmTimeline,
    ) -> format::StepRecord {
        let name_of = |id: NameId| names.get(id.0 as usize).map(|n| n.to_string());
        let e = &kept.event;
        let (kernel_count, device_busy_ms, top_kernels) =
            crate::report_kernels::step_kernels(kept.kernels.as_deref(), names);
        format::StepRecord {
            step_id: kept.step_id,
            batch_size: e.batch_size,
            num_tokens: e.num_tokens,
            start_time: self.unix_at(e.start_ns),
            duration_ms: ms(e.duration_ns),
            gpu_duration_ms: gpu_ms(kept.gpu_ns),
            memory_used_mb: finite(e.memory_end_mb),
            memory_start_mb: finite(e.memory_start_mb),
            thread_id: kept.thread_id,
            engine_step: (e.engine_step != NO_ENGINE_STEP).then_some(e.engine_step),
            kernel_count,
            device_busy_ms,
            top_kernels,
            layer_timings: kept
                .layers
                .iter()
                .filter_map(|l| {
                    let shapes = shapes.get(l.shapes);
                    Some((
                        name_of(l.name)?,
                        format::LayerTiming {
                            duration_ms: ms(l.total_ns),
                            gpu_duration_ms: gpu_ms(l.gpu_ns),
                            call_count: l.calls,
                            parent: name_of(l.parent),
                            depth: u32::from(l.depth),
                            memory_delta_mb: (l.memory_calls > 0)
                                .then(|| f32_precision(l.memory_delta_mb)),
                            input_shapes: shapes.and_then(|s| s.input_shapes.clone()),
                            output_shapes: shapes.and_then(|s| s.output_shapes.clone()),
                        },
                    ))
                })
                .collect(),
            gpu_metrics: format::StepGpuMetrics {
                start_utilization: finite(e.utilization_start),
                end_utilization: finite(e.utilization_end),
                start_gpm: gpm.at(self.unix_at(e.start_ns)),
                end_gpm: gpm.at(self.unix_at(e.start_ns.saturating_add(e.duration_ns))),
            },
        }
    }

    pub(crate) fn gpu_history(&self) -> Option<format::GpuHistory> {
        let store = self.samples.lock();
        if store.is_empty() {
            return None;
        }
        Some(self.history_locked(&store, None, f64::NEG_INFINITY))
    }

    /// The kept samples of `device` (all devices when `None`) taken at or after `since`
    /// (Unix seconds), oldest first, in the report's shape.
    pub fn gpu_samples(&self, device: Option<u32>, since: f64) -> format::GpuHistory {
        self.history_locked(&self.samples.lock(), device, since)
    }

    fn history_locked(
        &self,
        store: &SampleStore,
        device: Option<u32>,
        since: f64,
    ) -> format::GpuHistory {
        let sample_interval_s = self.settings.read().sample_interval.as_secs_f64();
        let mut gpu_history: Vec<format::GpuSample> = store
            .devices
            .iter()
            .filter(|(id, _)| device.is_none() || device == Some(*id))
            .flat_map(|(_, h)| h.iter().filter(|s| s.timestamp >= since).cloned())
            .collect();
        gpu_history.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        let (role, rank) = self.identity();
        format::GpuHistory {
            schema_version: format::SCHEMA_VERSION,
            pid: self.pid,
            role,
            rank,
            detector: store.detector.unwrap_or(format::CPU_DETECTOR).to_owned(),
            sample_interval_s,
            devices: store.described_devices.clone(),
            gpu_history,
            host_history: store
                .host
                .iter()
                .filter(|s| s.timestamp >= since)
                .cloned()
                .collect(),
            dropped_samples: store.dropped(),
            export: None,
        }
    }

    /// The trace of the kept steps and spans, with the samples of `history` as counters.
    pub(crate) fn trace_report(
        &self,
        kept: &[KeptStep],
        records: &TraceRecords<'_>,
        names: &[Arc<str>],
        history: Option<&format::GpuHistory>,
        stamp: format::ExportStamp,
    ) -> format::TraceFile {
        let trace_steps: Vec<TraceStep> = kept
            .iter()
            .map(|k| TraceStep {
                thread_id: k.thread_id,
                step_id: k.step_id,
                start_ns: k.event.start_ns,
                duration_ns: k.event.duration_ns,
                batch_size: k.event.batch_size,
                num_tokens: k.event.num_tokens,
                gpu_ns: k.gpu_ns,
            })
            .collect();
        let (role, rank) = self.identity();
        let process = trace::TraceProcess {
            pid: self.pid,
            started_unix: self.started_unix,
            name: self
                .recovered_name
                .clone()
                .unwrap_or_else(trace::TraceProcess::own_name),
            role,
            rank,
            live: self.recovered_name.is_none(),
        };
        let mut trace = trace::build(&process, &trace_steps, records, names, history);
        trace.other_data.extend([
            (
                format::ExportStamp::TRACE_SEQUENCE.to_owned(),
                format::TraceArg::Count(stamp.sequence),
            ),
            (
                format::ExportStamp::TRACE_AT.to_owned(),
                format::TraceArg::Number(stamp.at),
            ),
        ]);
        let run = self.run();
        if let Some(run_id) = run.run_id {
            let key = format::TraceFile::RUN_ID.to_owned();
            trace.other_data.insert(key, format::TraceArg::Text(run_id));
        }
        if let Some(parent) = run.parent_pid {
            let key = format::TraceFile::PARENT_PID.to_owned();
            trace
                .other_data
                .insert(key, format::TraceArg::Count(u64::from(parent)));
        }
        trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_figures_read_as_their_shortest_decimal() {
        assert_eq!(f32_precision(f64::from(64.2_f32)), 64.2);
        assert_eq!(f32_precision(0.001953125), 0.001953125);
        assert_eq!(f32_precision(-3.75), -3.75);
        assert_eq!(f32_precision(1e300), 1e300, "beyond f32: unchanged");
    }
}
