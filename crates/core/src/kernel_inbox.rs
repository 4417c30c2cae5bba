//! Where the kernel tracer hands kernel records to the session (`Session::record_kernels`): a
//! bounded list the collector empties at each drain, so that the tracer's thread never takes
//! the collector's lock.

use parking_lot::Mutex;

use crate::event::{KernelEvent, KERNEL_FROM_GRAPH};
use crate::kernel_context;
use crate::names::NameId;

/// Most kernel records waiting for the collector (48 bytes each: 3 MiB); past it they are
/// lost and counted. The collector drains every few milliseconds while records come in.
pub const INBOX_LIMIT: usize = 1 << 16;

/// One kernel the device ran, as the tracer read it.
#[derive(Debug, Clone, Copy)]
pub struct KernelLaunch {
    /// The external correlation id its launch carried (`crate::kernel_context::encode`); 0
    /// for none.
    pub context: u64,
    pub name: NameId,
    /// Its launch configuration as JSON, interned in the session's shapes table.
    pub launch: NameId,
    pub device: u32,
    pub stream: u32,
    pub from_graph: bool,
    /// Device start, on the session's clock (`Session::now_ns`).
    pub start_ns: u64,
    pub duration_ns: u64,
}

#[derive(Default)]
pub(crate) struct KernelInbox {
    events: Mutex<Vec<(u32, KernelEvent)>>,
}

impl KernelInbox {
    /// Everything waiting, oldest first; leaves the inbox empty (and its memory with it).
    pub(crate) fn take(&self) -> Vec<(u32, KernelEvent)> {
        std::mem::take(&mut *self.events.lock())
    }

    /// Takes what fits under `INBOX_LIMIT`; returns how many did not fit.
    pub(crate) fn push(&self, launches: &[KernelLaunch]) -> usize {
        let mut events = self.events.lock();
        let room = INBOX_LIMIT.saturating_sub(events.len());
        let taken = launches.len().min(room);
        events.extend(launches[..taken].iter().map(|launch| {
            let context = kernel_context::decode(launch.context);
            let event = KernelEvent {
                step_key: context.step_key,
                span: context.span,
                name: launch.name,
                launch: launch.launch,
                stream: launch.stream,
                device: u16::try_from(launch.device).unwrap_or(u16::MAX),
                flags: if launch.from_graph {
                    KERNEL_FROM_GRAPH
                } else {
                    0
                },
                start_ns: launch.start_ns,
                duration_ns: launch.duration_ns,
            };
            (context.thread_id, event)
        }));
        launches.len() - taken
    }
}
