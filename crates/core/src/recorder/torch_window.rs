//! A torch profiler window from the Python package (`vllm_profiler_torch_op_window`): parsed,
//! bounded, its names interned, its times moved onto the session's clock and its steps'
//! handles resolved; then its ops and trace go to the collector (`crate::torch_ops`) and its
//! kernels to the kernel level, attributed to the steps that launched them.

use std::sync::atomic::Ordering;

use rustc_hash::FxHashMap;
use vllm_profiler_format as format;

use super::ThreadRecorder;
use crate::error::{ProfilerError, Result};
use crate::kernel_context;
use crate::kernel_inbox::KernelLaunch;
use crate::names::{NameId, MAX_NAME_LEN};
use crate::torch_ops::{OpFigures, TraceOp, Window, WindowOp};
use crate::trace_torch_ops::{thread_track, torch_thread_track};

/// Op names one window may carry; the rest are counted under "(other ops)".
pub const MAX_WINDOW_OPS: usize = 4096;
/// Op executions one window puts in the trace; the rest are counted as dropped.
pub const MAX_WINDOW_EVENTS: usize = 1 << 16;
/// Kernels one window hands to the kernel level; the rest are counted as lost.
pub const MAX_WINDOW_KERNELS: usize = 1 << 16;
/// Distinct names the session's windows may add to its table of 65536 (shared with spans and
/// kernels); past it new op names count under "(other ops)".
pub const MAX_TORCH_OP_NAMES: u32 = 8192;
/// Most executions one window may say its sender left out.
const MAX_SENDER_DROPPED: u64 = 1 << 32;

/// `name` cut to `MAX_NAME_LEN` bytes at a character boundary.
fn bounded_name(name: &str) -> &str {
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    let mut end = MAX_NAME_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn invalid(why: impl Into<String>) -> ProfilerError {
    ProfilerError::InvalidWindow(why.into())
}

impl ThreadRecorder {
    /// Records one window given as the JSON of a `TorchOpWindowInput`. A document that does
    /// not parse, or whose window times do not hold together, is refused whole; events with
    /// times outside the window's clock are dropped and counted.
    pub fn record_torch_op_window_json(&mut self, json: &[u8]) -> Result<()> {
        // The sender read its clock just before the call: ours is read before the parse, which
        // takes milliseconds for a large window.
        let now = self.session.now_ns();
        let input: format::TorchOpWindowInput =
            serde_json::from_slice(json).map_err(|err| invalid(format!("not a window: {err}")))?;
        self.record_window_at(&input, now)
    }

    fn record_window_at(&mut self, input: &format::TorchOpWindowInput, now: u64) -> Result<()> {
        if input.start_ns > input.end_ns || input.end_ns > input.now_ns {
            return Err(invalid(format!(
                "start_ns {} <= end_ns {} <= now_ns {} does not hold",
                input.start_ns, input.end_ns, input.now_ns
            )));
        }
        // Everything that can refuse the window is checked before any name is interned.
        for op in &input.ops {
            if op.self_host_ns > op.host_ns {
                return Err(invalid(format!(
                    "op {:?}: self_host_ns {} > host_ns {}",
                    bounded_name(&op.name),
                    op.self_host_ns,
                    op.host_ns
                )));
            }
        }
        // A time t of the sender's clock happened (now_ns - t) ago; one after the sender's now,
        // or from before this session began, has no place on its clock.
        let ours = |t: u64| now.checked_sub(input.now_ns.checked_sub(t)?);
        let start_ns = ours(input.start_ns).unwrap_or(0);
        let end_ns = ours(input.end_ns).unwrap_or(start_ns);
        let ops = self.window_ops(&input.ops);
        let mut dropped_events = input.dropped_events.min(MAX_SENDER_DROPPED);
        let mut events = Vec::with_capacity(input.events.len().min(MAX_WINDOW_EVENTS));
        for event in &input.events {
            match ours(event.start_ns) {
                Some(start_ns) if events.len() < MAX_WINDOW_EVENTS => events.push(TraceOp {
                    track: match event.thread {
                        0 => thread_track(self.thread_id),
                        other => torch_thread_track(other),
                    },
                    name: self.op_name(&event.name),
                    start_ns,
                    duration_ns: event.duration_ns.min(input.now_ns - event.start_ns),
                }),
                _ => dropped_events = dropped_events.saturating_add(1),
            }
        }
        self.window_kernels(input, &ours);
        let window = Window {
            thread_id: self.thread_id,
            start_ns,
            end_ns,
            steps: u32::try_from(input.steps.len()).unwrap_or(u32::MAX),
            ops,
            events,
            dropped_events,
        };
        self.session.record_torch_op_window(window);
        Ok(())
    }

    /// The window's ops by name: repeated names are added up, names past `MAX_WINDOW_OPS`
    /// (or past the session's table) share `NameId::NONE`.
    fn window_ops(&mut self, inputs: &[format::TorchOpInput]) -> Vec<WindowOp> {
        let mut ops: Vec<WindowOp> = Vec::with_capacity(inputs.len().min(MAX_WINDOW_OPS + 1));
        let mut index: FxHashMap<NameId, usize> = FxHashMap::default();
        for op in inputs {
            let figures = OpFigures {
                calls: op.calls,
                host_ns: op.host_ns,
                self_host_ns: op.self_host_ns,
                device_ns: op.device_ns,
                self_device_ns: op.self_device_ns,
                self_cpu_memory_bytes: op.self_cpu_memory_bytes,
                self_device_memory_bytes: op.self_device_memory_bytes,
            };
            let name = self.op_name(&op.name);
            let name = if ops.len() < MAX_WINDOW_OPS || index.contains_key(&name) {
                name
            } else {
                NameId::NONE
            };
            match index.get(&name) {
                Some(&i) => ops[i].figures.add(&figures),
                None => {
                    index.insert(name, ops.len());
                    ops.push(WindowOp { name, figures });
                }
            }
        }
        ops
    }

    /// The window's kernels, to the kernel level: each attributed to the step at its index
    /// in `steps` when that handle is one of this thread's.
    fn window_kernels(
        &mut self,
        input: &format::TorchOpWindowInput,
        ours: &impl Fn(u64) -> Option<u64>,
    ) {
        if input.kernels.is_empty() {
            return;
        }
        let taken = input.kernels.len().min(MAX_WINDOW_KERNELS);
        let mut launches = Vec::with_capacity(taken);
        let mut lost = input.kernels.len() - taken;
        for kernel in &input.kernels[..taken] {
            let Some(start_ns) = ours(kernel.start_ns) else {
                lost += 1;
                continue;
            };
            let step_seq = (kernel.step)
                .and_then(|i| input.steps.get(i as usize))
                .and_then(|&handle| self.owner.seq_of(crate::handle::Handle::from_raw(handle)))
                .unwrap_or(0);
            launches.push(KernelLaunch {
                context: kernel_context::encode(self.thread_id, step_seq, NameId::NONE),
                name: self.op_name(&kernel.name),
                launch: NameId::NONE,
                device: kernel.device,
                stream: kernel.stream,
                from_graph: false,
                start_ns,
                // Not past the sender's now: no kernel runs into the future.
                duration_ns: kernel.duration_ns.min(input.now_ns - kernel.start_ns),
            });
        }
        if lost > 0 {
            let counters = self.session.counters();
            (counters.lost_kernel_records).fetch_add(lost as u64, Ordering::Relaxed);
        }
        self.session.record_kernels(&launches);
    }

    /// A name's id, through this thread's cache; `NameId::NONE` when the table is full or the
    /// windows added `MAX_TORCH_OP_NAMES` to it already.
    fn op_name(&mut self, name: &str) -> NameId {
        let name = bounded_name(name);
        if name.is_empty() {
            return NameId::NONE;
        }
        if let Some(&id) = self.names.get(name.as_bytes()) {
            return id;
        }
        let added = &self.session.torch_op_names;
        if added.load(Ordering::Relaxed) >= MAX_TORCH_OP_NAMES {
            return NameId::NONE;
        }
        let interner = self.session.interner();
        let before = interner.len();
        match interner.intern(name.as_bytes()) {
            Ok(id) => {
                if id.0 as usize >= before {
                    added.fetch_add(1, Ordering::Relaxed);
                }
                self.names.insert(name.as_bytes().into(), id);
                id
            }
            Err(_) => NameId::NONE,
        }
    }
}
