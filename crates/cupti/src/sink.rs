//! Where the tracer's records go: the agent implements it over its session, tests over a list.

/// One kernel the device ran, as read from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// The external correlation id its launch carried (kind CUSTOM2); 0 for none.
    pub context: u64,
    /// Its demangled name, interned; `None` when the sink's table is full.
    pub name: Option<u32>,
    /// Its launch configuration as JSON, interned; `None` when the table is full.
    pub launch: Option<u32>,
    pub device: u32,
    pub stream: u32,
    pub from_graph: bool,
    /// Device start on the sink's clock (`Sink::now_ns`).
    pub start_ns: u64,
    pub duration_ns: u64,
}

pub trait Sink: Send + Sync {
    /// Now, on the clock kernels' starts are given in.
    fn now_ns(&self) -> u64;
    fn intern_name(&self, name: &str) -> Option<u32>;
    /// `json` is a `KernelLaunch` of the report schema.
    fn intern_launch(&self, json: &str) -> Option<u32>;
    fn record(&self, kernels: &[Kernel]);
    /// Records CUPTI dropped for want of a buffer.
    fn dropped(&self, records: u64);
    /// One line for the user (the agent prints it once).
    fn warn(&self, message: String);
}
