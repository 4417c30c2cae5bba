//! Every way a profiler call can fail, in one typed enum with a stable C error code.

use std::fmt;

/// Result of a profiler operation.
pub type Result<T, E = ProfilerError> = std::result::Result<T, E>;

/// One enum for every failure the C ABI can report. `code()` is the stable negative number a
/// C caller sees; `Display` is the message `vllm_profiler_last_error` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfilerError {
    /// Profiling is off: nothing was recorded.
    NotEnabled,
    /// A NULL pointer, an empty name or a name that is not UTF-8.
    InvalidArgument(&'static str),
    /// A span's `shapes_json` was rejected (the reason inside); the span was still ended.
    InvalidShapes(String),
    /// A torch profiler window was rejected (the reason inside); nothing of it was recorded.
    InvalidWindow(String),
    /// The handle is unknown, already ended, or was begun on another thread.
    UnknownHandle { kind: &'static str, handle: u64 },
    /// A configuration JSON or value was rejected; nothing was changed.
    InvalidConfig(String),
    /// Writing a report failed.
    Io(String),
    /// The thread's buffer was full: the event is lost and counted in `lost_events`.
    BufferFull,
    /// A limit was reached (name length, number of distinct names).
    LimitExceeded(&'static str),
    /// The calling thread is exiting: its recorder is already gone.
    ThreadExiting,
    /// A bug inside the profiler was caught before it could reach the host.
    Internal(String),
    /// A journal could not be read or made sense of (the reason, with its path, inside).
    Journal(String),
}

const NOT_ENABLED: &str = "profiling is not enabled";
const BUFFER_FULL: &str =
    "the thread's event buffer was full; the event was dropped and counted in lost_events";
const THREAD_EXITING: &str = "the calling thread is exiting; nothing was recorded";

impl ProfilerError {
    /// The message when it needs no formatting: the errors a hot loop can meet on every call
    /// (profiling off, a full buffer) cost a pointer store, not a `format!`.
    pub fn static_message(&self) -> Option<&'static str> {
        match self {
            ProfilerError::NotEnabled => Some(NOT_ENABLED),
            ProfilerError::BufferFull => Some(BUFFER_FULL),
            ProfilerError::ThreadExiting => Some(THREAD_EXITING),
            _ => None,
        }
    }

    /// The negative C error code of this error (0 is success).
    pub fn code(&self) -> i32 {
        match self {
            ProfilerError::NotEnabled => -1,
            ProfilerError::InvalidArgument(_)
            | ProfilerError::InvalidShapes(_)
            | ProfilerError::InvalidWindow(_) => -2,
            ProfilerError::UnknownHandle { .. } => -3,
            ProfilerError::InvalidConfig(_) => -4,
            ProfilerError::Io(_) => -5,
            ProfilerError::BufferFull => -6,
            ProfilerError::LimitExceeded(_) => -7,
            ProfilerError::ThreadExiting => -8,
            ProfilerError::Internal(_) => -9,
            ProfilerError::Journal(_) => -5,
        }
    }
}

impl fmt::Display for ProfilerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfilerError::NotEnabled
            | ProfilerError::BufferFull
            | ProfilerError::ThreadExiting => f.write_str(self.static_message().unwrap_or_default()),
            ProfilerError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            ProfilerError::InvalidShapes(why) => write!(
                f,
                "invalid argument: {why}; the span was ended, without shapes"
            ),
            ProfilerError::InvalidWindow(why) => write!(
                f,
                "invalid argument: {why}; the torch op window was not recorded"
            ),
            ProfilerError::UnknownHandle { kind, handle } => write!(
                f,
                "unknown {kind} handle {handle}: never begun, already ended, or begun on another thread"
            ),
            ProfilerError::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
            ProfilerError::Io(msg) => write!(f, "export failed: {msg}"),
            ProfilerError::LimitExceeded(what) => write!(f, "limit exceeded: {what}"),
            ProfilerError::Internal(msg) => write!(f, "internal profiler error: {msg}"),
            ProfilerError::Journal(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ProfilerError {}

impl From<std::io::Error> for ProfilerError {
    fn from(err: std::io::Error) -> Self {
        ProfilerError::Io(err.to_string())
    }
}
