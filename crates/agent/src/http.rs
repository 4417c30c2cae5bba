//! A small HTTP/1.x server on one thread, for the metrics endpoint, with every bound fixed
//! here rather than by the client ([`Limits::DEFAULT`]): whatever a client sends or withholds,
//! the server holds at most 16 sockets of at most 8 KiB read each, gives each one 5 s to send
//! its request and as long again to take the answer, never reads a
//! request body (a declared Content-Length is never a size it allocates), and answers one
//! request per connection. Requests are parsed by `httparse`; the sockets are non-blocking and
//! waited on with `poll(2)`, so one slow client never holds up another.
//!
//! When a new connection comes while 16 are open, the oldest is closed. A new connection is
//! read at once, so a scrape whose request is already there is answered before any later
//! connection can push it out. Once answered, a connection's unread bytes (a body) are read
//! and dropped for up to [`LINGER`] before it closes, so that the kernel does not reset the
//! connection under an answer still on its way. A forked child closes the sockets it
//! inherited (`fork_closed`). No error of `accept` or `poll` stops the server: it backs off for
//! [`BACK_OFF`] (out of fds: after closing its oldest connection).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use vllm_profiler_gpu::fork_closed;

/// The bounds of a server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Open connections at most; one more closes the oldest.
    pub connections: usize,
    /// A request line and headers longer than this are answered 431 and closed.
    pub head_bytes: usize,
    /// A client has this long to send its request's head, and then as long to read the answer.
    pub deadline: Duration,
}

/// Open connections at most, whatever the limits say.
const MAX_CONNECTIONS: usize = 16;

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits {
        connections: MAX_CONNECTIONS,
        head_bytes: 8 * 1024,
        deadline: Duration::from_secs(5),
    };
}

/// Headers per request at most (more: 431).
const MAX_HEADERS: usize = 64;
/// How often the server looks at its stop channel while nothing happens.
const POLL: Duration = Duration::from_millis(200);
/// How long a stopped server goes on answering the connections it had.
const DRAIN: Duration = Duration::from_secs(1);
/// How long an answered connection's unread bytes are read and dropped, and how many at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// How long the server leaves the listener alone after `accept` or `poll` failed.
const BACK_OFF: Duration = Duration::from_millis(100);
/// Connections accepted per turn at most, so that a flood cannot starve the open ones.
const ACCEPTS_PER_TURN: usize = 64;

/// What the handler sees of a request.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The request target without its query (`/metrics` of `/metrics?x=1`).
    pub path: &'a str,
    /// The `Accept` header, when it was sent (the first one) and is text.
    pub accept: Option<&'a str>,
}

pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }
}

enum State {
    /// The head read so far.
    Reading(Vec<u8>),
    /// The answer and how much of it is written.
    Writing(Vec<u8>, usize),
    /// Answered: what the client still sends is read and dropped (this many bytes so far).
    Lingering(usize),
}

struct Connection {
    // Declared first, so dropped first: the registry lets go of the fd before it is closed.
    _close_in_child: fork_closed::CloseInChild,
    stream: TcpStream,
    state: State,
    deadline: Instant,
    /// The server's time in handlers when `deadline` was set: what it spends making answers
    /// after that moves the deadline on, so that it is never taken from a client's time.
    busy_mark: Duration,
}

impl Connection {
    /// When this connection's time is up, given the server's time in handlers so far.
    fn due(&self, busy: Duration) -> Instant {
        self.deadline + busy.saturating_sub(self.busy_mark)
    }
}

/// What every connection's turn needs: the bounds, the handler, and the time spent in it.
struct Serving<'a> {
    limits: Limits,
    handle: &'a dyn Fn(&Request) -> Response,
    busy: std::cell::Cell<Duration>,
}

/// Serves `listener` with `handle` until `stop` disconnects, calling `on_turn` between turns
/// (at least every [`POLL`]). A panic in `handle` is answered 500 on that connection only. On stop, the connections already made (open, or queued on the
/// listener) are still answered, for up to [`DRAIN`]: a scrape that came as the server stopped
/// gets its answer rather than a reset.
pub(crate) fn serve(
    listener: TcpListener,
    limits: Limits,
    stop: &Receiver<()>,
    handle: &dyn Fn(&Request) -> Response,
    on_turn: &mut dyn FnMut(),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let noted = fork_closed::close_in_child(listener.as_raw_fd());
    let limits = Limits {
        connections: limits.connections.clamp(1, MAX_CONNECTIONS),
        ..limits
    };
    let mut open: Vec<Connection> = Vec::with_capacity(limits.connections);
    let serving = Serving {
        limits,
        handle,
        busy: std::cell::Cell::new(Duration::ZERO),
    };
    let mut listen_again = Instant::now();
    while matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
        on_turn();
        let now = Instant::now();
        let (listening, wait) = if now >= listen_again {
            (Some(&listener), POLL)
        } else {
            (None, listen_again - now)
        };
        let listener_ready = serve_turn(listening, &mut open, &serving, wait);
        if listener_ready && !accept(&listener, &mut open, &serving, true) {
            listen_again = Instant::now() + BACK_OFF;
        }
    }
    // What is queued now is taken, unanswered (answered at once, a client could queue the next
    // request as fast as this takes them), and answered below; the listener closes after.
    accept(&listener, &mut open, &serving, false);
    drop(noted);
    drop(listener);
    let drained = Instant::now() + DRAIN;
    while !open.is_empty() && Instant::now() < drained {
        serve_turn(None, &mut open, &serving, POLL);
    }
    Ok(())
}

/// Closes one connection to make room: one already answered first, then the oldest still
/// waiting for its request, then the oldest being answered.
fn evict(open: &mut Vec<Connection>) {
    let rank = |c: &Connection| match c.state {
        State::Lingering(_) => 0,
        State::Reading(_) => 1,
        State::Writing(..) => 2,
    };
    if let Some(victim) = (0..open.len()).min_by_key(|&i| (rank(&open[i]), i)) {
        open.remove(victim);
    }
}

/// Waits for the next events (at most `wait`, and no later than the nearest deadline) and gives
/// each open connection its turn; returns whether `listener` has connections waiting.
fn serve_turn(
    listener: Option<&TcpListener>,
    open: &mut Vec<Connection>,
    serving: &Serving,
    wait: Duration,
) -> bool {
    let now = Instant::now();
    let busy = serving.busy.get();
    let wait = open
        .iter()
        .map(|c| c.due(busy).saturating_duration_since(now))
        .fold(wait.min(POLL), Duration::min);
    let (listener_ready, ready) = match wait_ready(listener, open, wait) {
        Ok(ready) => ready,
        Err(err) => {
            // More fds than the host's limit now allows (EINVAL), or no memory: fewer
            // connections, a pause, and the next turn tries again.
            if err == nix::errno::Errno::EINVAL {
                evict(open);
            }
            std::thread::sleep(BACK_OFF);
            return false;
        }
    };
    let mut index = 0;
    open.retain_mut(|connection| {
        let events = ready[index];
        index += 1;
        turn(connection, events, serving)
    });
    listener_ready
}

/// Polls the listener and the connections; returns whether the listener has a connection
/// waiting, and each connection's events, in order.
fn wait_ready(
    listener: Option<&TcpListener>,
    open: &[Connection],
    wait: Duration,
) -> nix::Result<(bool, Vec<PollFlags>)> {
    let mut fds = Vec::with_capacity(open.len() + 1);
    if let Some(listener) = listener {
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
    }
    for connection in open {
        let interest = match connection.state {
            State::Reading(_) | State::Lingering(_) => PollFlags::POLLIN,
            State::Writing(..) => PollFlags::POLLOUT,
        };
        fds.push(PollFd::new(connection.stream.as_fd(), interest));
    }
    // The wait is at most POLL: it fits.
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(err) => return Err(err),
    }
    let mut events: Vec<PollFlags> = fds
        .iter()
        .map(|fd| fd.revents().unwrap_or(PollFlags::POLLERR))
        .collect();
    let listener_ready = listener.is_some() && events.remove(0).contains(PollFlags::POLLIN);
    Ok((listener_ready, events))
}

/// Accepts what is waiting (at most [`ACCEPTS_PER_TURN`]), reading each new connection at
/// once when `answer_now` (else later); false when `accept` failed with nothing left to free
/// (the listener is then left alone for [`BACK_OFF`], so that a connection the process has
/// no fd for does not make every poll return at once).
fn accept(
    listener: &TcpListener,
    open: &mut Vec<Connection>,
    serving: &Serving,
    answer_now: bool,
) -> bool {
    let limits = serving.limits;
    for _ in 0..ACCEPTS_PER_TURN {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // Out of fds (EMFILE, ENFILE): one of ours goes, and the accept is tried
                // again at once with the fd it freed. Nothing to free, or another error
                // (no memory): back off.
                let out_of_fds = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if out_of_fds && !open.is_empty() {
                    evict(open);
                    continue;
                }
                return false;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let mut connection = Connection {
            _close_in_child: fork_closed::close_in_child(stream.as_raw_fd()),
            stream,
            state: State::Reading(Vec::new()),
            deadline: Instant::now() + limits.deadline,
            busy_mark: serving.busy.get(),
        };
        if answer_now && !turn(&mut connection, PollFlags::POLLIN, serving) {
            continue; // answered (or gone) already
        }
        if open.len() >= limits.connections {
            evict(open);
        }
        open.push(connection);
    }
    true
}

/// One connection's turn; false when it is done with (answered, failed, or out of time).
fn turn(connection: &mut Connection, events: PollFlags, serving: &Serving) -> bool {
    // Now, not when the turn began: answers made since moved no deadline of this one's.
    if Instant::now() >= connection.due(serving.busy.get()) {
        return false;
    }
    let limits = serving.limits;
    let readable = events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP);
    if readable {
        if let State::Lingering(dropped) = &mut connection.state {
            return linger(&mut connection.stream, dropped);
        }
    }
    let writable = events.contains(PollFlags::POLLOUT);
    if events.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
        return false;
    }
    match &mut connection.state {
        State::Reading(head) if readable => {
            match read_head(&mut connection.stream, head, limits.head_bytes) {
                Ok(Some(head)) => {
                    let made = Instant::now();
                    connection.state = State::Writing(answer(head, serving.handle), 0);
                    serving.busy.set(serving.busy.get() + made.elapsed());
                    // From when the answer is ready: making it took none of a client's time.
                    connection.deadline = Instant::now() + limits.deadline;
                    connection.busy_mark = serving.busy.get();
                    // Most answers fit the socket's buffer: write now rather than a turn later.
                    write_some(connection)
                }
                Ok(None) => true,
                Err(()) => false,
            }
        }
        State::Writing(..) if writable => write_some(connection),
        _ => true,
    }
}

/// A complete head: a request, or why it is none.
enum Head {
    Request {
        method: String,
        path: String,
        accept: Option<String>,
    },
    Refused(u16, &'static str),
}

/// Reads what the socket has into `head`; `Some` once the head is complete (or cannot
/// become a request), `Err` when the connection is to be dropped unanswered.
fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>, limit: usize) -> Result<Option<Head>, ()> {
    let mut chunk = [0u8; 2048];
    loop {
        let want = (limit - head.len()).min(chunk.len());
        if want == 0 {
            return Ok(Some(Head::Refused(431, "request head too large")));
        }
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Err(()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(()),
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        return Ok(match request.parse(head) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                let target = origin_form(request.path.unwrap_or(""));
                let accept = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .and_then(|h| std::str::from_utf8(h.value).ok());
                Some(Head::Request {
                    method: request.method.unwrap_or("").to_owned(),
                    path: target.split('?').next().unwrap_or("").to_owned(),
                    accept: accept.map(str::to_owned),
                })
            }
            Err(httparse::Error::TooManyHeaders) => Some(Head::Refused(431, "too many headers")),
            Err(_) => Some(Head::Refused(400, "not an HTTP/1.x request")),
        });
    }
}

/// The path of a target in absolute form (`http://host:port/metrics`, which RFC 9112 has a
/// server accept), or the target as it is.
fn origin_form(target: &str) -> &str {
    let Some(rest) = ["http://", "https://"].iter().find_map(|scheme| {
        target
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    }) else {
        return target;
    };
    rest.find('/').map_or("/", |at| &rest[at..])
}

/// The bytes that answer `head`.
fn answer(head: Head, handle: &dyn Fn(&Request) -> Response) -> Vec<u8> {
    match head {
        Head::Request {
            method,
            path,
            accept,
        } => {
            let request = Request {
                method: &method,
                path: &path,
                accept: accept.as_deref(),
            };
            let response = catch_unwind(AssertUnwindSafe(|| handle(&request)))
                .unwrap_or_else(|_| Response::text(500, "internal error\n"));
            encode(&response, method == "HEAD")
        }
        Head::Refused(status, why) => encode(&Response::text(status, &format!("{why}\n")), false),
    }
}

fn write_some(connection: &mut Connection) -> bool {
    let State::Writing(answer, written) = &mut connection.state else {
        return true;
    };
    while *written < answer.len() {
        match connection.stream.write(&answer[*written..]) {
            Ok(0) => return false,
            Ok(n) => *written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    // Done: the client sees the end of the answer. What it still sends (a body, a second
    // request) is read and dropped for a while: closing with unread bytes would reset the
    // connection, and the client could lose the end of the answer.
    let _ = connection.stream.shutdown(Shutdown::Write);
    connection.deadline = connection.deadline.min(Instant::now() + LINGER);
    let mut dropped = 0;
    let lingering = linger(&mut connection.stream, &mut dropped);
    connection.state = State::Lingering(dropped);
    lingering
}

/// Reads and drops what an answered client sends; false once it is done (closed its side)
/// or sent [`LINGER_BYTES`].
fn linger(stream: &mut TcpStream, dropped: &mut usize) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                *dropped += n;
                if *dropped >= LINGER_BYTES {
                    return false;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The bytes of `response`, its body left out for a HEAD request (its length stays).
fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    bytes
}

#[cfg(test)]
mod tests;
