//! The events a recording thread hands to the collector through its ring: fixed-size, `Copy`,
//! and journaled as they are.

use crate::names::NameId;

/// A finished span or step, as handed from a recording thread to the collector.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) enum Event {
    // Keep events small: the ring is preallocated, RING_CAPACITY of them per thread.
    Span(SpanEvent),
    Step(StepEvent),
    /// A device duration measured after its span or step ended (CUDA events resolve later).
    Gpu(GpuEvent),
    /// A kernel the device ran, from the kernel tracer (`crate::kernels`); its thread in the
    /// feed is the launching thread (0 when unknown).
    Kernel(KernelEvent),
}

/// One kernel record, as the kernel tracer read it and the collector attributed nothing yet.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct KernelEvent {
    /// The launching thread's innermost step (`crate::kernel_context::step_key`); 0 for none.
    pub step_key: u32,
    /// The innermost span open at the launch; `NameId::NONE` for none.
    pub span: NameId,
    pub name: NameId,
    /// Its launch configuration, as JSON in the shapes table; `NameId::NONE` when unknown.
    pub launch: NameId,
    pub stream: u32,
    pub device: u16,
    /// `KERNEL_FROM_GRAPH` when a CUDA graph launched it.
    pub flags: u16,
    /// Device start, on the session's clock.
    pub start_ns: u64,
    pub duration_ns: u64,
}

/// `KernelEvent::flags`: launched as a node of a CUDA graph.
pub(crate) const KERNEL_FROM_GRAPH: u16 = 1;

/// The device time of one ended span, or of one ended step, as the recorder resolved its
/// handle: by name and step, since the collector has long folded the span in.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct GpuEvent {
    /// The span's name; `NameId::NONE` for the step itself.
    pub name: NameId,
    /// The step: the span's (0 when it was in none), or the step's own sequence number.
    pub step_seq: u64,
    /// The span's own sequence number; 0 for a step.
    pub span_seq: u64,
    pub duration_ns: u64,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct SpanEvent {
    /// The span's sequence number on its thread (what its handle names).
    pub seq: u64,
    pub name: NameId,
    pub parent: NameId,
    pub depth: u32,
    /// Memory delta over the span in MiB, from the caller; NaN when none was given.
    pub memory_delta_mb: f32,
    /// Id of the span's canonical shapes in the session's shapes table; `NameId::NONE` when
    /// none were given.
    pub shapes: NameId,
    /// Sequence number of the step it belongs to, 0 when outside every step.
    pub step_seq: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
}

/// A device time that was never set (CPU, or no event pair resolved).
pub(crate) const NO_GPU_TIME: u64 = u64::MAX;

/// Adds `ns` to a device time that may be unset, saturating below the "unset" value.
pub(crate) fn add_gpu_time(total: &mut u64, ns: u64) {
    let sum = if *total == NO_GPU_TIME {
        ns
    } else {
        total.saturating_add(ns)
    };
    *total = sum.min(NO_GPU_TIME - 1);
}

/// `StepEvent::engine_step` of a step that served no known engine step.
pub const NO_ENGINE_STEP: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct StepEvent {
    pub seq: u64,
    /// The engine step this step served (a worker's step), or the engine's own sequence
    /// number of it; `NO_ENGINE_STEP` when unknown.
    pub engine_step: u64,
    pub batch_size: u32,
    pub num_tokens: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// NaN when unknown.
    pub memory_start_mb: f32,
    pub memory_end_mb: f32,
    pub utilization_start: f32,
    pub utilization_end: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small() {
        // One cache line: the ring is preallocated, `RING_CAPACITY` events per thread.
        assert!(
            std::mem::size_of::<Event>() <= 64,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}
