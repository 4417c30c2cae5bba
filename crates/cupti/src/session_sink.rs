//! The sink of a live session: kernel names and launch configurations interned in its tables,
//! kernels handed to its inbox (the collector attributes them), drops counted.

use std::sync::Arc;

use vllm_profiler_core::kernel_inbox::KernelLaunch;
use vllm_profiler_core::names::NameId;
use vllm_profiler_core::Session;

use crate::sink::{Kernel, Sink};

pub struct SessionSink {
    session: Arc<Session>,
    warn: fn(String),
}

impl SessionSink {
    /// `warn` prints one line for the user (the agent's warnings, once each).
    pub fn new(session: Arc<Session>, warn: fn(String)) -> SessionSink {
        SessionSink { session, warn }
    }
}

impl Sink for SessionSink {
    fn now_ns(&self) -> u64 {
        self.session.now_ns()
    }

    fn intern_name(&self, name: &str) -> Option<u32> {
        let id = self.session.interner().intern(name.as_bytes()).ok()?;
        Some(id.0)
    }

    fn intern_launch(&self, json: &str) -> Option<u32> {
        let id = self.session.shapes().intern(json.as_bytes()).ok()?;
        Some(id.0)
    }

    fn record(&self, kernels: &[Kernel]) {
        let launches: Vec<KernelLaunch> = kernels
            .iter()
            .map(|k| KernelLaunch {
                context: k.context,
                name: k.name.map_or(NameId::NONE, NameId),
                launch: k.launch.map_or(NameId::NONE, NameId),
                device: k.device,
                stream: k.stream,
                from_graph: k.from_graph,
                start_ns: k.start_ns,
                duration_ns: k.duration_ns,
            })
            .collect();
        self.session.record_kernels(&launches);
    }

    fn dropped(&self, records: u64) {
        self.session.count_dropped_kernel_records(records);
    }

    fn warn(&self, message: String) {
        (self.warn)(message);
    }
}
