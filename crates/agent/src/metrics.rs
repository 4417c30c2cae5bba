//! The Prometheus endpoint (`VLLM_PROFILING_PROMETHEUS_ADDR=host:port`): the host's one scrape
//! target for every profiled process that has the address set.
//!
//! Each such process runs a `vprof-metrics` thread that joins the address's group in the
//! runtime dir (`members`): it publishes its figures there every second, and the member that
//! holds the group's lock binds the port and serves `GET /metrics` with the bounded server of
//! `http`: its own figures fresh, the others' as their files last said (`series`), in the
//! classic text or OpenMetrics format as the client asks (`exposition`), an answer made at most
//! every half second. When the server exits, however it exits, another member takes the lock
//! within [`TURN`] and binds the port. Where the runtime dir cannot be used, the process serves
//! its own figures alone, when it can bind the port.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use vllm_profiler_core::Session;

use crate::http;
use crate::warnings;
use members::{Group, PUBLISH_PERIOD};

mod exposition;
mod members;
mod series;

pub(crate) use series::STEP_BUCKETS_S;

/// How often a member that does not serve tries the lock (and a server that cannot bind, its
/// port): the longest a scrape target is gone after its server exits.
pub(crate) const TURN: Duration = Duration::from_millis(250);
/// How long the server reuses an answer.
const ANSWER_CACHE: Duration = Duration::from_millis(500);
/// How often a server that cannot bind its port tries again.
const BIND_RETRY: Duration = Duration::from_secs(2);
/// Binds of a port in use tried, a [`TURN`] apart, before it is said: the server that exited
/// a moment ago may close its port a moment after its lock.
const QUIET_BIND_FAILURES: u32 = 2;

/// Where and how the endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub addr: String,
    pub runtime_dir: PathBuf,
    pub expiry: Duration,
}

/// Starts the `vprof-metrics` thread of `session`, until `stop` disconnects.
pub(crate) fn start(
    endpoint: Endpoint,
    session: Arc<Session>,
    stop: Receiver<()>,
) -> Result<(), String> {
    let builder = std::thread::Builder::new().name("vprof-metrics".to_owned());
    crate::quiet_threads::spawn(builder, move || run(&endpoint, &session, &stop))
        .map(drop)
        .map_err(|err| format!("cannot start the metrics thread: {err}"))
}

fn run(endpoint: &Endpoint, session: &Session, stop: &Receiver<()>) {
    let addr = &endpoint.addr;
    let mut group = match Group::join(&endpoint.runtime_dir, addr) {
        Ok(group) => Some(group),
        Err(why) => {
            warnings::print_warnings(&[format!(
                "Prometheus metrics on {addr} are not shared with the host's other processes \
                 ({why}); this process serves its own there"
            )]);
            None
        }
    };
    let mut next_publish = Instant::now();
    let (mut bind_failures, mut warned, mut next_bind) = (0u32, false, Instant::now());
    loop {
        if let Some(group) = &group {
            publish_when_due(group, session, &mut next_publish);
        }
        // Alone (no group), a process serves when it can bind.
        let leading = group.as_mut().is_none_or(Group::try_serve);
        if leading && Instant::now() >= next_bind {
            match TcpListener::bind(addr.as_str()) {
                Ok(listener) => return serve(listener, endpoint, session, group.as_ref(), stop),
                Err(err) => {
                    bind_failures += 1;
                    let quiet = err.kind() == io::ErrorKind::AddrInUse
                        && bind_failures < QUIET_BIND_FAILURES;
                    if !quiet && !warned {
                        warnings::print_warnings(&[cannot_serve(addr, &err)]);
                        warned = true;
                    }
                    next_bind = Instant::now() + if quiet { Duration::ZERO } else { BIND_RETRY };
                }
            }
        }
        if !matches!(stop.recv_timeout(TURN), Err(RecvTimeoutError::Timeout)) {
            return;
        }
    }
}

fn cannot_serve(addr: &str, err: &dyn std::fmt::Display) -> String {
    format!("cannot serve Prometheus metrics on {addr}: {err}; retrying while profiling is on")
}

fn publish_when_due(group: &Group, session: &Session, next: &mut Instant) {
    let now = Instant::now();
    if now < *next {
        return;
    }
    *next = now + PUBLISH_PERIOD;
    if let Ok(snapshot) = session.metrics_snapshot(&STEP_BUCKETS_S) {
        // A full or read-only runtime dir: this process's series are missing from the
        // others' server until it can write again (its own server still has them).
        let _ = group.publish(&snapshot);
    }
}

/// Serves `listener` until `stop`, publishing this process's figures meanwhile.
fn serve(
    listener: TcpListener,
    endpoint: &Endpoint,
    session: &Session,
    group: Option<&Group>,
    stop: &Receiver<()>,
) {
    let answers = Answers {
        session,
        group,
        expiry: endpoint.expiry,
        hostname: hostname(),
        cache: RefCell::new(Vec::new()),
        said_more: Cell::new(false),
    };
    let handle = |request: &http::Request| answers.respond(request);
    let mut next_publish = Instant::now();
    let mut on_turn = || {
        if let Some(group) = group {
            publish_when_due(group, session, &mut next_publish);
        }
    };
    if let Err(err) = http::serve(listener, http::Limits::DEFAULT, stop, &handle, &mut on_turn) {
        warnings::print_warnings(&[format!(
            "stopped serving Prometheus metrics on {}: {err}",
            endpoint.addr
        )]);
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default()
}

/// What the server answers, made at most once per [`ANSWER_CACHE`] and format: a flood of
/// scrapes costs one rendering (and one read of the runtime dir) per half second.
struct Answers<'a> {
    session: &'a Session,
    group: Option<&'a Group>,
    expiry: Duration,
    hostname: String,
    cache: RefCell<Vec<(exposition::Format, Instant, Vec<u8>)>>,
    /// Whether the warning about more members than are served was printed.
    said_more: Cell<bool>,
}

impl Answers<'_> {
    fn respond(&self, request: &http::Request) -> http::Response {
        if request.path != "/metrics" {
            return http::Response::text(404, "only /metrics is served\n");
        }
        if request.method != "GET" && request.method != "HEAD" {
            return http::Response::text(405, "GET /metrics\n");
        }
        let format = exposition::negotiate(request.accept);
        let mut cache = self.cache.borrow_mut();
        cache.retain(|(_, at, _)| at.elapsed() < ANSWER_CACHE);
        if let Some((_, _, body)) = cache.iter().find(|(f, ..)| *f == format) {
            return http::Response {
                status: 200,
                content_type: format.content_type(),
                body: body.clone(),
            };
        }
        let own = match self.session.metrics_snapshot(&STEP_BUCKETS_S) {
            Ok(own) => own,
            Err(err) => return http::Response::text(503, &format!("{err}\n")),
        };
        let mut snapshots = vec![own];
        if let Some(group) = self.group {
            let (others, more) = group.others(self.expiry);
            snapshots.extend(others);
            if more && !self.said_more.replace(true) {
                warnings::print_warnings(&[format!(
                    "more than {} other profiled processes publish Prometheus metrics here; \
                     those of the lowest pids are served",
                    members::MAX_MEMBERS
                )]);
            }
        }
        let families = series::families(&snapshots, &self.hostname);
        let body = exposition::encode(&families, format).into_bytes();
        cache.push((format, Instant::now(), body.clone()));
        http::Response {
            status: 200,
            content_type: format.content_type(),
            body,
        }
    }
}

/// The text one process's `snapshot` renders to, as the server of a group of one would serve
/// it.
#[cfg(test)]
pub(crate) fn render(
    snapshot: &vllm_profiler_format::MetricsSnapshot,
    format: exposition::Format,
) -> String {
    let families = series::families(std::slice::from_ref(snapshot), "host");
    exposition::encode(&families, format)
}

#[cfg(test)]
mod tests;
