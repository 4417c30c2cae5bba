//! The collector: drains every recording thread's ring into what is kept (`crate::kept`), and
//! hands what it drained to the journal's feed. One `Collector` per session, under its lock.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::event::Event;
use crate::kept::{Feed, Kept, StepBuilder};
use crate::kernel_inbox::KernelInbox;
use crate::torch_ops::TorchOpInbox;

/// A recording thread's finished events, as the collector reads them: its ring, which the
/// recorder (`crate::recorder`) owns. Behind a trait so that the collector, and what reads a
/// journal without recording, need no ring.
pub(crate) trait EventSource: Send {
    /// The oldest event not taken yet.
    fn pop(&mut self) -> Option<Event>;
    /// Whether its thread is gone and every event it wrote was taken.
    fn is_finished(&self) -> bool;
}

struct ThreadSource {
    events: Box<dyn EventSource>,
    thread_id: u32,
    /// Builders of this thread's steps whose end has not been drained yet.
    pending: FxHashMap<u64, StepBuilder>,
}

pub(crate) struct Collector {
    sources: Vec<ThreadSource>,
    pub(crate) kept: Kept,
    /// What was drained since the journal last took it.
    pub(crate) feed: Feed,
    /// Kernel records, drained after the thread rings.
    kernels: Arc<KernelInbox>,
    /// Torch profiler windows, drained last.
    torch_ops: Arc<TorchOpInbox>,
}

impl Collector {
    pub(crate) fn new(
        max_history: usize,
        kernels: Arc<KernelInbox>,
        torch_ops: Arc<TorchOpInbox>,
    ) -> Collector {
        Collector {
            sources: Vec::new(),
            kept: Kept::new(max_history),
            feed: Feed::default(),
            kernels,
            torch_ops,
        }
    }

    /// Reads thread `thread_id`'s ring from now on.
    #[cfg(feature = "recorder")]
    pub(crate) fn add_source(&mut self, events: Box<dyn EventSource>, thread_id: u32) {
        self.sources.push(ThreadSource {
            events,
            thread_id,
            pending: FxHashMap::default(),
        });
    }

    /// Moves every finished event from the thread rings into the totals and the history.
    pub(crate) fn drain(&mut self) {
        let Collector {
            sources,
            kept,
            feed,
            kernels,
            torch_ops,
        } = self;
        for source in sources.iter_mut() {
            while let Some(event) = source.events.pop() {
                feed.push(source.thread_id, &event);
                kept.ingest(&mut source.pending, source.thread_id, event);
            }
        }
        // After the rings: a kernel's step has usually been drained by now.
        let mut no_pending = FxHashMap::default();
        for (thread_id, kernel) in kernels.take() {
            let pending = match sources.iter_mut().find(|s| s.thread_id == thread_id) {
                Some(source) => &mut source.pending,
                None => &mut no_pending,
            };
            let event = Event::Kernel(kernel);
            feed.push(thread_id, &event);
            kept.ingest(pending, thread_id, event);
        }
        for window in torch_ops.take() {
            kept.torch_ops.add(&window);
            feed.push_window(window);
        }
        // A thread that has exited and whose events are all in can be forgotten.
        sources.retain(|s| !s.events.is_finished());
    }

    /// Every thread's builders of steps in progress: (thread, step sequence, builder).
    pub(crate) fn pending(&self) -> impl Iterator<Item = (u32, u64, &StepBuilder)> {
        self.sources.iter().flat_map(|source| {
            source
                .pending
                .iter()
                .map(move |(seq, builder)| (source.thread_id, *seq, builder))
        })
    }
}
