//! A small HTTP/1.x server on one thread, for the metrics endpoint, with every bound fixed
//! here rather than by the client ([`Limits::DEFAULT`]): whatever a client sends or withholds,
//! the server holds at most 16 sockets of at most 8 KiB read each, gives each one 5 s to send
//! its request and as long again to take the answer, never reads a
//! request body (a declared Content-Length is never a size it allocates), and answers one
//! request per connection. Requests are parsed by `httparse`; the sockets are non-blocking and
//! waited on with `poll(2)`, so one slow client never holds up another.
//!
//! When a new connection comes while 16 are open, the oldest is closed: a
//! client that opens sockets and sends nothing can delay a scrape by one turn, never refuse it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use nix::poll::{PollFd, PollFlags, PollTimeout};

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

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits {
        connections: 16,
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
/// Connections accepted per turn at most, so that a flood cannot starve the open ones.
const ACCEPTS_PER_TURN: usize = 64;

/// What the handler sees of a request.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The request target without its query (`/metrics` of `/metrics?x=1`).
    pub path: &'a str,
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
}

struct Connection {
    stream: TcpStream,
    state: State,
    deadline: Instant,
}

/// Serves `listener` with `handle` until `stop` disconnects. A panic in `handle` is answered
/// 500 on that connection only. On stop, the connections already made (open, or queued on the
/// listener) are still answered, for up to [`DRAIN`]: a scrape that came as the server stopped
/// gets its answer rather than a reset.
pub(crate) fn serve(
    listener: TcpListener,
    limits: Limits,
    stop: &Receiver<()>,
    handle: &dyn Fn(&Request) -> Response,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut open: Vec<Connection> = Vec::with_capacity(limits.connections);
    while matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
        let listener_ready = serve_turn(Some(&listener), &mut open, limits, handle)?;
        if listener_ready {
            accept(&listener, limits, &mut open);
        }
    }
    accept(&listener, limits, &mut open);
    drop(listener);
    let drained = Instant::now() + DRAIN;
    while !open.is_empty() && Instant::now() < drained {
        serve_turn(None, &mut open, limits, handle)?;
    }
    Ok(())
}

/// Waits for the next events (at most [`POLL`]) and gives each open connection its turn;
/// returns whether `listener` has connections waiting.
fn serve_turn(
    listener: Option<&TcpListener>,
    open: &mut Vec<Connection>,
    limits: Limits,
    handle: &dyn Fn(&Request) -> Response,
) -> io::Result<bool> {
    let now = Instant::now();
    let wait = open
        .iter()
        .map(|c| c.deadline.saturating_duration_since(now))
        .fold(POLL, Duration::min);
    let (listener_ready, ready) = wait_ready(listener, open, wait)?;
    let now = Instant::now();
    let mut index = 0;
    open.retain_mut(|connection| {
        let events = ready[index];
        index += 1;
        turn(connection, events, now, limits, handle)
    });
    Ok(listener_ready)
}

/// Polls the listener and the connections; returns whether the listener has a connection
/// waiting, and each connection's events, in order.
fn wait_ready(
    listener: Option<&TcpListener>,
    open: &[Connection],
    wait: Duration,
) -> io::Result<(bool, Vec<PollFlags>)> {
    let mut fds = Vec::with_capacity(open.len() + 1);
    if let Some(listener) = listener {
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
    }
    for connection in open {
        let interest = match connection.state {
            State::Reading(_) => PollFlags::POLLIN,
            State::Writing(..) => PollFlags::POLLOUT,
        };
        fds.push(PollFd::new(connection.stream.as_fd(), interest));
    }
    // The wait is at most POLL: it fits.
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(err) => return Err(err.into()),
    }
    let mut events: Vec<PollFlags> = fds
        .iter()
        .map(|fd| fd.revents().unwrap_or(PollFlags::POLLERR))
        .collect();
    let listener_ready = listener.is_some() && events.remove(0).contains(PollFlags::POLLIN);
    Ok((listener_ready, events))
}

fn accept(listener: &TcpListener, limits: Limits, open: &mut Vec<Connection>) {
    for _ in 0..ACCEPTS_PER_TURN {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // WouldBlock: none left; another error (a connection reset while queued, no fd
            // left) ends this turn's accepts, and the next turn tries again.
            Err(_) => return,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if open.len() >= limits.connections {
            open.remove(0);
        }
        open.push(Connection {
            stream,
            state: State::Reading(Vec::new()),
            deadline: Instant::now() + limits.deadline,
        });
    }
}

/// One connection's turn; false when it is done with (answered, failed, or out of time).
fn turn(
    connection: &mut Connection,
    events: PollFlags,
    now: Instant,
    limits: Limits,
    handle: &dyn Fn(&Request) -> Response,
) -> bool {
    if now >= connection.deadline {
        return false;
    }
    let readable = events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP);
    let writable = events.contains(PollFlags::POLLOUT);
    if events.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
        return false;
    }
    match &mut connection.state {
        State::Reading(head) if readable => {
            match read_head(&mut connection.stream, head, limits.head_bytes) {
                Ok(Some(head)) => {
                    connection.state = State::Writing(answer(head, handle), 0);
                    connection.deadline = now + limits.deadline;
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
    Request { method: String, path: String },
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
                let target = request.path.unwrap_or("");
                Some(Head::Request {
                    method: request.method.unwrap_or("").to_owned(),
                    path: target.split('?').next().unwrap_or("").to_owned(),
                })
            }
            Err(httparse::Error::TooManyHeaders) => Some(Head::Refused(431, "too many headers")),
            Err(_) => Some(Head::Refused(400, "not an HTTP/1.x request")),
        });
    }
}

/// The bytes that answer `head`.
fn answer(head: Head, handle: &dyn Fn(&Request) -> Response) -> Vec<u8> {
    match head {
        Head::Request { method, path } => {
            let request = Request {
                method: &method,
                path: &path,
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
    // Done: the client sees the end of the answer; unread bytes it sent (a body, a second
    // request) are dropped with the socket.
    let _ = connection.stream.shutdown(Shutdown::Write);
    false
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
