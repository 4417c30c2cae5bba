//! The Prometheus endpoint (`VLLM_PROFILING_PROMETHEUS_ADDR=host:port`): the host's one scrape
//! target for every profiled process that has the address set.
//!
//! Each such process runs a `vprof-metrics` thread that joins the address's group in the
//! runtime dir (`members`): it publishes its figures there every second, and the member that
//! holds the group's lock binds the port and serves `GET /metrics` with the bounded server of
//! `http`: its own figures fresh, the others' as their files last said (`series`), in the
//! classic text or OpenMetrics format as the client asks (`exposition`). When the server
//! exits, however it exits, another member takes the lock within [`TURN`] and binds the port.
//! Where the runtime dir cannot be used, the process serves its own figures alone.

use std::cell::RefCell;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use vllm_profiler_core::Session;
use vllm_profiler_format::MetricsSnapshot;

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
/// How long the server reuses the others' figures it read: a flood of scrapes reads the
/// runtime dir at most this often.
const OTHERS_CACHE: Duration = Duration::from_millis(500);
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
    let group = match Group::join(&endpoint.runtime_dir, addr) {
        Ok(group) => Some(group),
        Err(why) => {
            warnings::print_warnings(&[format!(
                "Prometheus metrics on {addr} are not shared with the host's other processes \
                 ({why}); this process serves its own there"
            )]);
            None
        }
    };
    let Some(mut group) = group else {
        match TcpListener::bind(addr.as_str()) {
            Ok(listener) => serve(listener, endpoint, session, None, stop),
            Err(err) => warnings::print_warnings(&[format!(
                "cannot serve Prometheus metrics on {addr}: {err}"
            )]),
        }
        return;
    };
    let mut next_publish = Instant::now();
    let (mut bind_failures, mut warned, mut next_bind) = (0u32, false, Instant::now());
    loop {
        publish_when_due(&group, session, &mut next_publish);
        if group.try_serve() && Instant::now() >= next_bind {
            match TcpListener::bind(addr.as_str()) {
                Ok(listener) => return serve(listener, endpoint, session, Some(&group), stop),
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
    let hostname = hostname();
    let cache: RefCell<Option<(Instant, Vec<MetricsSnapshot>)>> = RefCell::new(None);
    let others = || -> Vec<MetricsSnapshot> {
        let Some(group) = group else {
            return Vec::new();
        };
        let mut cache = cache.borrow_mut();
        match &*cache {
            Some((at, others)) if at.elapsed() < OTHERS_CACHE => others.clone(),
            _ => {
                let others = group.others(endpoint.expiry);
                *cache = Some((Instant::now(), others.clone()));
                others
            }
        }
    };
    let handle = |request: &http::Request| respond(request, session, &others, &hostname);
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

fn respond(
    request: &http::Request,
    session: &Session,
    others: &dyn Fn() -> Vec<MetricsSnapshot>,
    hostname: &str,
) -> http::Response {
    if request.path != "/metrics" {
        return http::Response::text(404, "only /metrics is served\n");
    }
    if request.method != "GET" && request.method != "HEAD" {
        return http::Response::text(405, "GET /metrics\n");
    }
    match session.metrics_snapshot(&STEP_BUCKETS_S) {
        Ok(own) => {
            let mut snapshots = vec![own];
            snapshots.extend(others());
            let format = exposition::negotiate(request.accept);
            let families = series::families(&snapshots, hostname);
            http::Response {
                status: 200,
                content_type: format.content_type(),
                body: exposition::encode(&families, format).into_bytes(),
            }
        }
        Err(err) => http::Response::text(503, &format!("{err}\n")),
    }
}

/// The text one process's `snapshot` renders to, as the server of a group of one would serve
/// it.
#[cfg(test)]
pub(crate) fn render(snapshot: &MetricsSnapshot, format: exposition::Format) -> String {
    let families = series::families(std::slice::from_ref(snapshot), "host");
    exposition::encode(&families, format)
}

#[cfg(test)]
mod tests;
