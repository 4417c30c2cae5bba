//! The export: drains, maps (`crate::report`) and writes the four report files atomically
//! (`crate::atomic_file`), stamped with their export's sequence number. Exports are serialised,
//! and the final one closes the session so that nothing replaces its files afterwards.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::MutexGuard;
use vllm_profiler_format as format;

use crate::atomic_file;
use crate::error::{ProfilerError, Result};
use crate::report::ShapesTable;
use crate::session::Session;
use crate::step_gpm::GpmTimeline;
use crate::trace::TraceRecords;

/// How long an export waits for another one in progress (a large history takes seconds).
pub const EXPORT_WAIT: Duration = Duration::from_secs(10);

/// Serialises a sequence of step records as they are produced, without collecting them.
struct StreamedSteps<I> {
    records: RefCell<I>,
}

impl<I: Iterator<Item = format::StepRecord>> serde::Serialize for StreamedSteps<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&mut *self.records.borrow_mut())
    }
}

impl Session {
    /// Writes the report files into `dir` (created if missing); returns the paths written.
    /// A session that recorded nothing and sampled nothing writes nothing, and so does a closed
    /// one.
    pub fn export(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let _serial = self.lock_exports()?;
        if self.closed.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        self.export_locked(dir)
    }

    /// The final export: waits for one in progress, writes, and closes the session so that no
    /// periodic export replaces (or half-writes) the final files afterwards.
    /// The journal goes once the reports are written: they hold everything it had.
    pub fn close_and_export(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let _serial = self.lock_exports()?;
        if self.closed.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        // The journal first gets what it lacks, so that a kill during the export (vLLM's
        // SIGKILL at shutdown, a SIGTERM) loses nothing: `recover` has it all. A compaction
        // this turn would start is left: the old pair stays whole.
        drop(self.collect());
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        let written = self.export_locked(dir)?;
        self.close_journal();
        Ok(written)
    }

    fn lock_exports(&self) -> Result<MutexGuard<'_, ()>> {
        self.export_lock
            .try_lock_for(EXPORT_WAIT)
            .ok_or_else(|| ProfilerError::Internal("another export stayed busy for 10 s".into()))
    }

    fn export_locked(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        atomic_file::remove_dead_temporaries_now_and_then(dir);
        let stamp = format::ExportStamp {
            sequence: self.exports.fetch_add(1, Ordering::Relaxed) + 1,
            at: self.clock.unix_now(),
        };
        // Under the lock: drain, the summary (cheap: totals) and a shallow copy of the history.
        let recorded = {
            let mut collector = self.lock_collector()?;
            collector.drain();
            collector.kept.any().then(|| {
                (
                    format::PerformanceSummary {
                        export: Some(stamp),
                        ..self.summary_locked(&collector, None)
                    },
                    collector.kept.history.iter().cloned().collect::<Vec<_>>(),
                    collector.kept.history.dropped(),
                    collector
                        .kept
                        .trace_spans
                        .iter()
                        .copied()
                        .collect::<Vec<_>>(),
                    collector.kept.trace_spans.dropped(),
                    collector
                        .kept
                        .trace_kernels
                        .iter()
                        .copied()
                        .collect::<Vec<_>>(),
                    (collector.kept.torch_ops.trace.iter())
                        .copied()
                        .collect::<Vec<_>>(),
                )
            })
        };
        let history = self.gpu_history().map(|history| format::GpuHistory {
            export: Some(stamp),
            ..history
        });
        let mut written = Vec::new();
        if let Some((summary, kept, dropped_steps, spans, dropped_spans, kernels, torch_ops)) =
            recorded
        {
            written.push(atomic_file::write_json_atomic(
                dir,
                &format::summary_file_name(self.pid),
                &summary,
            )?);
            let names = self.interner.snapshot();
            let shapes = ShapesTable::new(self.shapes.snapshot());
            let (role, rank) = self.identity();
            let gpm = GpmTimeline::new(history.as_ref().map_or(&[], |h| &h.gpu_history[..]));
            let steps = format::DetailedSteps {
                schema_version: format::SCHEMA_VERSION,
                pid: self.pid,
                role,
                rank,
                memory_source: self.latest.memory_source(),
                dropped_steps,
                export: Some(stamp),
                // Streamed: one record is built and written at a time.
                detailed_steps: StreamedSteps {
                    records: RefCell::new(
                        kept.iter()
                            .map(|k| self.step_record(k, &names, &shapes, &gpm)),
                    ),
                },
            };
            written.push(atomic_file::write_json_atomic(
                dir,
                &format::detailed_steps_file_name(self.pid),
                &steps,
            )?);
            let trace = self.trace_report(
                &kept,
                &TraceRecords {
                    spans: &spans,
                    dropped_spans,
                    kernels: &kernels,
                    torch_ops: &torch_ops,
                },
                &names,
                history.as_ref(),
                stamp,
            );
            written.push(atomic_file::write_json_atomic(
                dir,
                &format::trace_file_name(self.pid),
                &trace,
            )?);
        }
        if let Some(history) = history {
            written.push(atomic_file::write_json_atomic(
                dir,
                &format::gpu_history_file_name(self.pid),
                &history,
            )?);
        }
        Ok(written)
    }
}
