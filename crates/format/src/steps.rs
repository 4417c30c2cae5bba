//! `detailed_steps_<pid>.json`: one record per step, with its layers and their shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gpu::GpmFigures;
use crate::summary::{ExportStamp, MemorySource, Role};

/// `detailed_steps_<pid>.json`. `Steps` is how the writer holds the records: readers get a
/// `Vec<StepRecord>`; a writer may pass anything that serialises as a sequence of
/// `StepRecord`, so that a large history streams to disk one record at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetailedSteps<Steps = Vec<StepRecord>> {
    pub schema_version: u32,
    pub pid: u32,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub rank: Option<u32>,
    pub memory_source: MemorySource,
    /// Oldest steps evicted from the bounded history before this file was written.
    pub dropped_steps: u64,
    /// The export that wrote this file: the reports of one export (`performance_summary`,
    /// `detailed_steps`, `gpu_history`, and `trace`'s `otherData`) carry the same stamp, so a
    /// reader can tell a whole set from one that mixes two exports (after a kill or a full
    /// disk). Absent from a summary asked for through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStamp>,
    /// seed 004: the kept history, oldest first.
    pub detailed_steps: Steps,
}

/// seed 004 detailed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// seed 004: 0, 1, 2, ... in the order the steps completed in this process.
    pub step_id: u64,
    pub batch_size: u32,
    pub num_tokens: u32,
    /// Unix seconds when the step began.
    pub start_time: f64,
    /// Host time: from the step's begin call to its end call.
    pub duration_ms: f64,
    /// Device time: what the GPU spent on the step's work, from CUDA events recorded on the
    /// stream at its begin and end. `null` on CPU, and where no pair was recorded.
    #[serde(default)]
    pub gpu_duration_ms: Option<f64>,
    /// seed 004: memory in use at the end of the step; see `memory_source`.
    pub memory_used_mb: Option<f64>,
    /// Memory in use at the start of the step.
    pub memory_start_mb: Option<f64>,
    /// OS thread id that ran the step.
    pub thread_id: u32,
    /// The engine step this step served: in a worker, the engine core's `engine_step` of the
    /// scheduler output it ran; in the engine core, its own count of steps that did work
    /// (0, 1, ...). Join a worker's steps to the engine's on it. `null` when unknown.
    #[serde(default)]
    pub engine_step: Option<u64>,
    /// Kernel records of this step (`VLLM_PROFILING_KERNELS=1`): launched on its thread
    /// between its begin and end, CUDA graph replays included. 0 when kernels are off.
    #[serde(default)]
    pub kernel_count: u32,
    /// Time at least one of the step's kernels ran, per device, summed over devices: the GPU's
    /// own view of how busy the step kept it. `null` when the step had no kernel record.
    #[serde(default)]
    pub device_busy_ms: Option<f64>,
    /// The step's kernel names that took the most device time, slowest first (at most 5);
    /// `null` when it had no kernel record.
    #[serde(default)]
    pub top_kernels: Option<Vec<StepKernel>>,
    /// seed 004: per span name inside this step.
    pub layer_timings: BTreeMap<String, LayerTiming>,
    pub gpu_metrics: StepGpuMetrics,
}

/// One kernel name inside one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepKernel {
    pub name: String,
    pub call_count: u32,
    pub duration_ms: f64,
}

/// seed 004 `layer_timings` entry: one name inside one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTiming {
    /// Host time of every call of this name in the step. On a GPU this is the time taken to
    /// launch its kernels, not to run them: see `gpu_duration_ms`.
    pub duration_ms: f64,
    /// Device time of the calls of this name in the step, from CUDA events around each call.
    /// `null` on CPU, and where no pair was recorded.
    #[serde(default)]
    pub gpu_duration_ms: Option<f64>,
    pub call_count: u32,
    /// Name of the enclosing span at its first call, `null` at the top of the step.
    pub parent: Option<String>,
    /// Nesting depth under the step at its first call (0 = directly inside the step).
    pub depth: u32,
    /// seed 004: sum of the memory deltas (MiB) of this name's calls in the step that carried
    /// one (`vllm_profiler_span_end_annotated`); omitted when none did. Figures carry `f32`
    /// precision (about 7 significant digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_delta_mb: Option<f64>,
    /// seed 004: input tensor shapes of the first call in the step that carried shapes;
    /// omitted when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shapes: Option<Vec<Vec<u64>>>,
    /// seed 004: output tensor shapes of that same call; omitted when it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shapes: Option<Vec<Vec<u64>>>,
}

/// The tensor shapes a caller attaches to one span (`shapes_json` of
/// `vllm_profiler_span_end_annotated`): `{"input_shapes": [[8, 512, 768]], "output_shapes":
/// [[8, 512, 768]]}`. Either key may be left out; any other key is rejected; every dimension is
/// a non-negative integer. Serialises without the absent keys, so that equal shapes serialise
/// to the same canonical text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with the keys input_shapes and/or output_shapes"
)]
pub struct SpanShapes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shapes: Option<Vec<Vec<u64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shapes: Option<Vec<Vec<u64>>>,
}

impl SpanShapes {
    /// Neither key given (or both `null`): nothing to attach.
    pub fn is_empty(&self) -> bool {
        self.input_shapes.is_none() && self.output_shapes.is_none()
    }
}

/// seed 004 `gpu_metrics` of a step: figures of the sampled device at its start and end, from
/// its newest sample at each moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepGpuMetrics {
    pub start_utilization: Option<f64>,
    pub end_utilization: Option<f64>,
    /// The device's GPM figures in its newest sample at the start, `null` where it gives none
    /// or where no kept sample is that old (they are looked up in the GPU history at export).
    #[serde(default)]
    pub start_gpm: Option<GpmFigures>,
    #[serde(default)]
    pub end_gpm: Option<GpmFigures>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::LayerPerformance;

    #[test]
    fn span_shapes_reject_unknown_keys_and_bad_dims() {
        let ok: SpanShapes =
            serde_json::from_str(r#"{"output_shapes": [[2, 3]], "input_shapes": [[1], []]}"#)
                .unwrap();
        assert_eq!(ok.input_shapes, Some(vec![vec![1], vec![]]));
        assert_eq!(ok.output_shapes, Some(vec![vec![2, 3]]));
        // Canonical: fixed key order, no spaces, absent keys left out.
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"input_shapes":[[1],[]],"output_shapes":[[2,3]]}"#
        );
        let only_out: SpanShapes = serde_json::from_str(r#"{"output_shapes": []}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&only_out).unwrap(),
            r#"{"output_shapes":[]}"#
        );
        assert!(serde_json::from_str::<SpanShapes>("{}").unwrap().is_empty());
        for bad in [
            r#"{"input_shapes": [[1]], "colour": 1}"#,
            r#"{"input_shapes": [[-1]]}"#,
            r#"{"input_shapes": [[1.5]]}"#,
            r#"{"input_shapes": [1]}"#,
            r#"{"input_shapes": "8x512"}"#,
            r#"[[1]]"#,
        ] {
            assert!(serde_json::from_str::<SpanShapes>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<SpanShapes>(r#"{"colour": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn layer_entries_of_older_files_parse_and_absent_annotations_are_omitted() {
        let timing: LayerTiming = serde_json::from_str(
            r#"{"duration_ms": 1.5, "call_count": 2, "parent": null, "depth": 0}"#,
        )
        .unwrap();
        assert_eq!(timing.memory_delta_mb, None);
        assert_eq!(timing.input_shapes, None);
        assert_eq!(timing.output_shapes, None);
        let json = serde_json::to_value(&timing).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        // Device time is always written (null without a device); annotations only when set.
        assert_eq!(
            keys,
            [
                "call_count",
                "depth",
                "duration_ms",
                "gpu_duration_ms",
                "parent"
            ]
        );
        assert!(json["gpu_duration_ms"].is_null());

        let perf: LayerPerformance = serde_json::from_str(
            r#"{"avg_duration_ms": 1.0, "call_count": 1, "total_duration_ms": 1.0}"#,
        )
        .unwrap();
        assert_eq!(perf.avg_memory_delta_mb, None);
        assert!(serde_json::to_value(&perf)
            .unwrap()
            .get("avg_memory_delta_mb")
            .is_none());
    }
}
