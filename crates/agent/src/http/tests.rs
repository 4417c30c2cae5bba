//! The server against hostile clients: every bound holds, and a scrape is answered after.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::*;

/// A server on a port of its own, serving until dropped.
struct Server {
    port: u16,
    _stop: Sender<()>,
}

fn handler(request: &Request) -> Response {
    match request.path {
        "/ok" => Response::text(200, "fine\n"),
        "/big" => Response {
            status: 200,
            content_type: "application/octet-stream",
            body: vec![b'x'; 32 << 20],
        },
        "/panic" => panic!("a handler bug"),
        "/slow" => {
            // Longer to make than a short test deadline: the client's time starts after.
            std::thread::sleep(Duration::from_millis(600));
            Response {
                status: 200,
                content_type: "application/octet-stream",
                body: vec![b'y'; 8 << 20],
            }
        }
        _ => Response::text(404, "no\n"),
    }
}

fn start(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    std::thread::spawn(move || serve(listener, limits, &stopped, &handler, &mut || {}).unwrap());
    Server { port, _stop: stop }
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Sends `bytes` on a new connection and reads until the server closes it.
fn exchange(server: &Server, bytes: &[u8]) -> String {
    let mut stream = connect(server);
    stream.write_all(bytes).unwrap();
    read_to_close(&mut stream)
}

fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // The server dropped unread bytes of ours: the kernel resets; what came before stays.
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("{err}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_lines(answer: &str) -> Vec<&str> {
    answer
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect()
}

const GET_OK: &[u8] = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_request_is_answered_with_its_length_and_the_connection_closed() {
    let server = start(Limits::DEFAULT);
    let answer = exchange(&server, GET_OK);
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\
         Connection: close\r\n\r\nfine\n"
    );
    let head = exchange(&server, b"HEAD /ok?x=1 HTTP/1.0\r\n\r\n");
    assert!(
        head.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"),
        "{head}"
    );
}

#[test]
fn pipelined_requests_get_one_answer() {
    let server = start(Limits::DEFAULT);
    let answer = exchange(&server, &[GET_OK, GET_OK, GET_OK].concat());
    assert_eq!(status_lines(&answer), ["HTTP/1.1 200 OK"], "{answer}");
}

#[test]
fn a_declared_body_is_never_read_whatever_its_size() {
    let server = start(Limits::DEFAULT);
    for length in [
        "1000000000000",
        &u64::MAX.to_string(),
        "99999999999999999999999",
    ] {
        let request = format!("POST /ok HTTP/1.1\r\nContent-Length: {length}\r\n\r\nabc");
        let answer = exchange(&server, request.as_bytes());
        assert_eq!(status_lines(&answer), ["HTTP/1.1 200 OK"], "{answer}");
    }
    let chunked = b"POST /ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
    assert_eq!(
        status_lines(&exchange(&server, chunked)),
        ["HTTP/1.1 200 OK"]
    );
}

#[test]
fn expect_100_continue_gets_the_final_answer_at_once() {
    let server = start(Limits::DEFAULT);
    let request = b"POST /ok HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let answer = exchange(&server, request);
    assert_eq!(status_lines(&answer), ["HTTP/1.1 200 OK"], "{answer}");
}

#[test]
fn a_head_over_the_limit_is_431_and_garbage_is_400() {
    let server = start(Limits::DEFAULT);
    let long = format!(
        "GET /ok HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(Limits::DEFAULT.head_bytes)
    );
    let answer = exchange(&server, long.as_bytes());
    assert_eq!(
        status_lines(&answer),
        ["HTTP/1.1 431 Request Header Fields Too Large"]
    );
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let answer = exchange(
        &server,
        format!("GET /ok HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(
        status_lines(&answer),
        ["HTTP/1.1 431 Request Header Fields Too Large"]
    );
    for garbage in [
        &b"\x00\x01\x02\xff\r\n\r\n"[..],
        b"GET /ok HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /ok\r\n\r\n",
    ] {
        let answer = exchange(&server, garbage);
        assert_eq!(
            status_lines(&answer),
            ["HTTP/1.1 400 Bad Request"],
            "{garbage:?}"
        );
    }
}

#[test]
fn a_panicking_handler_answers_500_and_the_server_goes_on() {
    let server = start(Limits::DEFAULT);
    let answer = exchange(&server, b"GET /panic HTTP/1.1\r\n\r\n");
    assert_eq!(
        status_lines(&answer),
        ["HTTP/1.1 500 Internal Server Error"]
    );
    assert_eq!(
        status_lines(&exchange(&server, GET_OK)),
        ["HTTP/1.1 200 OK"]
    );
}

#[test]
fn silent_connections_past_the_limit_close_the_oldest_and_never_keep_a_scrape_out() {
    let limits = Limits {
        deadline: Duration::from_secs(600),
        ..Limits::DEFAULT
    };
    let server = start(limits);
    let mut silent: Vec<TcpStream> = (0..limits.connections + 4)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(b"GET /ok HT").unwrap();
            stream
        })
        .collect();
    assert_eq!(
        status_lines(&exchange(&server, GET_OK)),
        ["HTTP/1.1 200 OK"]
    );
    // The 4 past the limit closed the 4 oldest, unanswered (and the scrape a fifth, if its
    // request was not there yet when it was accepted); the newest stay open.
    for stream in &mut silent[..4] {
        assert_eq!(read_to_close(stream), "");
    }
    let newest = silent.last_mut().unwrap();
    newest.write_all(b"TP/1.1\r\n\r\n").unwrap();
    assert_eq!(status_lines(&read_to_close(newest)), ["HTTP/1.1 200 OK"]);
}

#[test]
fn a_client_past_its_deadline_is_closed_whether_it_sends_or_does_not_read() {
    let limits = Limits {
        deadline: Duration::from_millis(300),
        ..Limits::DEFAULT
    };
    let server = start(limits);
    let mut slow = connect(&server);
    slow.write_all(b"GET /ok HTTP/1.1\r\n").unwrap();
    assert_eq!(read_to_close(&mut slow), "");
    // 32 MiB that the client never reads: the write stalls, and the deadline drops it.
    let mut stalled = connect(&server);
    stalled.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(limits.deadline * 3);
    let answer = read_to_close(&mut stalled);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{}", &answer[..40]);
    assert!(
        answer.len() < 32 << 20,
        "the answer was cut at the deadline"
    );
    assert_eq!(
        status_lines(&exchange(&server, GET_OK)),
        ["HTTP/1.1 200 OK"]
    );
}

#[test]
fn a_connection_made_before_the_stop_is_still_answered() {
    let server = start(Limits::DEFAULT);
    let mut stream = connect(&server);
    let port = server.port;
    drop(server);
    stream.write_all(GET_OK).unwrap();
    assert_eq!(
        status_lines(&read_to_close(&mut stream)),
        ["HTTP/1.1 200 OK"]
    );
    // Stopped: the port is free once the answer is out.
    std::thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_body_sent_with_the_request_never_cuts_the_answer_short() {
    let server = start(Limits::DEFAULT);
    let mut stream = connect(&server);
    let request = [
        &b"POST /big-enough HTTP/1.1\r\nContent-Length: 200000\r\n\r\n"[..],
        &vec![b'b'; 200_000],
    ]
    .concat();
    // The body goes while the answer comes: the server drops it, and closes without a reset.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = stream.write_all(&request);
        })
    };
    let answer = read_to_close(&mut stream);
    writer.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nno\n"), "{answer}");
}

#[test]
fn a_target_in_absolute_form_is_its_path() {
    let server = start(Limits::DEFAULT);
    for target in ["http://127.0.0.1:9/ok", "HTTP://host/ok?x", "https://h/ok"] {
        let answer = exchange(&server, format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(status_lines(&answer), ["HTTP/1.1 200 OK"], "{target}");
    }
    let answer = exchange(&server, b"GET http://host HTTP/1.1\r\n\r\n");
    assert_eq!(status_lines(&answer), ["HTTP/1.1 404 Not Found"]);
}

#[test]
fn answered_connections_make_room_before_one_still_waiting_for_its_request() {
    let limits = Limits {
        deadline: Duration::from_secs(600),
        ..Limits::DEFAULT
    };
    let server = start(limits);
    // Connected first, its request comes last.
    let mut waiting = connect(&server);
    waiting.write_all(b"GET /ok").unwrap();
    // More answered clients than there is room for, each keeping its socket open (the server
    // keeps an answered connection for a while, reading what the client still sends).
    let answered: Vec<TcpStream> = (0..limits.connections + 8)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(GET_OK).unwrap();
            let mut head = [0u8; 17];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
            stream
        })
        .collect();
    waiting.write_all(b" HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        status_lines(&read_to_close(&mut waiting)),
        ["HTTP/1.1 200 OK"]
    );
    drop(answered);
}

#[test]
fn the_time_to_make_an_answer_is_not_taken_from_the_clients_time_to_read_it() {
    let server = start(Limits {
        deadline: Duration::from_millis(500),
        ..Limits::DEFAULT
    });
    // Two at once: the second waits for the first to be made, then both are read whole.
    let mut first = connect(&server);
    let mut second = connect(&server);
    first.write_all(b"GET /slow HTTP/1.1\r\n\r\n").unwrap();
    second.write_all(b"GET /slow HTTP/1.1\r\n\r\n").unwrap();
    for stream in [&mut first, &mut second] {
        let answer = read_to_close(stream);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        assert_eq!(body.len(), 8 << 20, "{}", &answer[..answer.len().min(200)]);
    }
}
