//! The companion server's limits, each against the real server with small numbers: silent,
//! trickling and non-reading clients are cut; the connection cap evicts the longest-waiting idle
//! connection and refuses when everything is busy; anonymous requests have places of their own;
//! memory stays within the download budget; locks are bounded and bind only their user; two
//! `Authorization` headers are refused. Nothing here asserts a time: each test waits (with a
//! generous bound) for what must happen, and prints how long it took.
//!
//! The full-size load (thousands of connections) is `scripts/bench/server-load`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ironic_cpi_testkit::files::files_under;
use ironic_cpi_testkit::server::{raw_http, ServerLab, ServerOpts, READ_USER, WRITE_USER};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Longest any test waits for the server to do what it must (the configured limits are 1 s).
const PATIENCE: Duration = Duration::from_secs(60);

fn auth((u, p): (&str, &str)) -> String {
    use base64::Engine;
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    format!("Authorization: Basic {enc}\r\n")
}

fn addr(lab: &ServerLab) -> String {
    lab.url.trim_start_matches("http://").to_string()
}

/// A connection whose receive buffer is small, so that a client that does not read stalls the
/// server after a few KiB.
fn small_buffer_connection(lab: &ServerLab) -> TcpStream {
    let target: std::net::SocketAddr = addr(lab).parse().unwrap();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    // Before connecting, so that the window the client offers is small from the start.
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&target.into())
        .unwrap_or_else(|e| panic!("connect {target}: {e}"));
    s.into()
}

/// Read until the server closes the connection; the bytes read, or `None` when it stayed open
/// for all of `PATIENCE`.
fn read_until_closed(s: &mut TcpStream) -> Option<usize> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(total),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn healthz(lab: &ServerLab) -> u16 {
    raw_http(
        &lab.url,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .map(|r| r.status)
    .unwrap_or(0)
}

fn put(lab: &ServerLab, path: &str, data: Vec<u8>) {
    let r = Client::new()
        .put(lab.at(path))
        .basic_auth(WRITE_USER.0, Some(WRITE_USER.1))
        .body(data)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "PUT {path}: {}", r.status());
}

fn strict(extra: Value) -> ServerLab {
    let mut config = json!({
        "header_read_timeout_seconds": 1,
        "body_read_timeout_seconds": 1,
        "response_write_timeout_seconds": 1,
        "min_bytes_per_second": 2000,
        "access_log": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    ServerLab::start(ServerOpts {
        anonymous_read: true,
        extra: config,
        ..Default::default()
    })
    .unwrap()
}

fn temp_files(dir: &std::path::Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".ironic-cpi-"))
        })
        .count()
}

#[test]
fn silent_trickling_and_non_reading_clients_are_cut() {
    let lab = strict(json!({}));
    put(&lab, "images/big.img", vec![7u8; 8 * 1024 * 1024]);
    let start = Instant::now();

    // Says nothing.
    let mut silent = TcpStream::connect(addr(&lab)).unwrap();
    // Sends its head one byte at a time, each well within any idle timeout.
    let mut slow_head = TcpStream::connect(addr(&lab)).unwrap();
    // An authenticated upload whose body trickles.
    let mut slow_body = TcpStream::connect(addr(&lab)).unwrap();
    write!(
        slow_body,
        "PUT /images/trickle.bin HTTP/1.1\r\nHost: x\r\n{}Content-Length: 100000\r\n\r\n",
        auth(WRITE_USER)
    )
    .unwrap();
    // A download it never reads.
    let mut stalled = small_buffer_connection(&lab);
    stalled
        .write_all(b"GET /images/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    let tricklers: Vec<_> = [
        (slow_head.try_clone().unwrap(), b"GET /images/big.img HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec()),
        (slow_body.try_clone().unwrap(), vec![b'x'; 100_000]),
    ]
    .into_iter()
    .map(|(mut s, bytes)| {
        std::thread::spawn(move || {
            for b in bytes {
                if s.write_all(&[b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            false
        })
    })
    .collect();

    for (name, s) in [
        ("silent", &mut silent),
        ("trickled head", &mut slow_head),
        ("trickled body", &mut slow_body),
    ] {
        assert!(
            read_until_closed(s).is_some(),
            "{name}: the server kept the connection open"
        );
        println!(
            "{name}: closed by the server after {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    for t in tricklers {
        assert!(
            t.join().unwrap(),
            "a trickling client could write to the end"
        );
    }
    // The stalled download: once the server gave up on it (its summary says so), what it sent is
    // all there is.
    wait_for_log(&lab, "response not read");
    let got = read_until_closed(&mut stalled).expect("the server kept the stalled download");
    assert!(
        got < 8 * 1024 * 1024,
        "the whole image went out ({got} bytes)"
    );
    println!("stalled download: cut after {got} bytes");

    assert!(
        !lab.root.join("images/trickle.bin").exists(),
        "a cut upload was stored"
    );
    assert_eq!(
        temp_files(&lab.root),
        0,
        "temp files of the cut upload remain"
    );
    assert_eq!(healthz(&lab), 200);
}

/// Wait until the server's log holds `text` (its limits summary comes every 10 s).
fn wait_for_log(lab: &ServerLab, text: &str) {
    let start = Instant::now();
    while !lab.log().contains(text) {
        assert!(
            start.elapsed() < PATIENCE,
            "no {text:?} in the log:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Send a GET of `path` on a small-buffer connection and read the status line of the answer
/// (the server is then busy writing the rest, which this client does not read). A connection
/// refused at the cap gets a 503 and is closed at once, possibly before the request arrives, so
/// that the kernel resets it: that is a 503 too.
fn stalled_get(lab: &ServerLab, path: &str, user: Option<(&str, &str)>) -> (TcpStream, u16) {
    let mut s = small_buffer_connection(lab);
    let creds = user.map(auth).unwrap_or_default();
    if write!(s, "GET /{path} HTTP/1.1\r\nHost: x\r\n{creds}\r\n").is_err() {
        return (s, 503);
    }
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut status = [0u8; 12];
    match s.read_exact(&mut status) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return (s, 503),
        Err(e) => panic!("reading the answer: {e}"),
    }
    let code = String::from_utf8_lossy(&status[9..12]).parse().unwrap_or(0);
    (s, code)
}

#[test]
fn the_cap_evicts_idle_connections_and_keeps_room_for_authenticated_clients() {
    let lab = strict(json!({
        "header_read_timeout_seconds": 120,
        "response_write_timeout_seconds": 120,
        "max_connections": 12,
        "max_anonymous_requests": 4,
    }));
    put(&lab, "images/big.img", vec![7u8; 4 * 1024 * 1024]);

    // Twelve silent connections fill the cap (a few ms apart, so that their age orders them);
    // new ones still get in, evicting the oldest. The server accepts in arrival order, so all
    // twelve are in when the health check comes.
    let mut idle: Vec<TcpStream> = (0..12)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            TcpStream::connect(addr(&lab)).unwrap()
        })
        .collect();
    assert_eq!(healthz(&lab), 200, "health checks get in at the cap");
    assert!(
        read_until_closed(&mut idle[0]).is_some(),
        "the oldest idle connection made room"
    );

    // Anonymous downloads that never read take their four places; the fifth is refused.
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let (s, status) = stalled_get(&lab, "images/big.img", None);
            assert_eq!(status, 200);
            s
        })
        .collect();
    let r = raw_http(
        &lab.url,
        b"GET /images/big.img HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(r.head.to_ascii_lowercase().contains("retry-after"));
    // Authenticated clients and health checks still get their answers.
    let r = Client::new()
        .get(lab.at("images/big.img"))
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().unwrap().len(), 4 * 1024 * 1024);
    assert_eq!(healthz(&lab), 200);

    // Every place busy with a request: new connections are refused with a 503, not left hanging.
    // (The first of these evict the idle connections left; the last find no room.)
    let mut busy = Vec::new();
    let mut turned_away = 0;
    for _ in 0..12 {
        match stalled_get(&lab, "images/big.img", Some(READ_USER)) {
            (s, 200) => busy.push(s),
            (_, 503) => turned_away += 1,
            (_, other) => panic!("status {other}"),
        }
    }
    println!(
        "{} busy downloads hold the other places; {turned_away} turned away",
        busy.len()
    );
    assert!(turned_away > 0);
    let mut refused = TcpStream::connect(addr(&lab)).unwrap();
    refused.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    let _ = refused.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");

    // They go away: everything is served again.
    drop((idle, stalled, busy));
    let start = Instant::now();
    loop {
        let ok = healthz(&lab) == 200
            && Client::new()
                .get(lab.at("images/big.img"))
                .send()
                .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "not served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "served again {:.2} s after the clients went away",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn non_reading_downloads_hold_no_more_than_the_download_budget() {
    let lab = strict(json!({
        "response_write_timeout_seconds": 120,
        "download_buffer_bytes": 1048576,
        "max_anonymous_requests": 200,
    }));
    put(&lab, "images/big.img", vec![7u8; 8 * 1024 * 1024]);
    let before = lab.peak_rss_kib().unwrap();
    let stalled: Vec<TcpStream> = (0..150)
        .map(|_| {
            let (s, status) = stalled_get(&lab, "images/big.img", None);
            assert_eq!(status, 200);
            s
        })
        .collect();
    // Each has had its chance to fill its socket and the server's buffers.
    std::thread::sleep(Duration::from_secs(2));
    let peak = lab.peak_rss_kib().unwrap();
    println!(
        "150 downloads that never read: peak RSS {} KiB (before: {before} KiB; budget 1024 KiB)",
        peak
    );
    // Without the budget each would hold up to two 256 KiB chunks: 75 MiB.
    assert!(
        peak - before < 32 * 1024,
        "RSS grew by {} KiB",
        peak - before
    );
    assert_eq!(healthz(&lab), 200);
    drop(stalled);
}

#[test]
fn two_authorization_headers_are_refused() {
    let lab = strict(json!({}));
    let req = format!(
        "GET /images/x HTTP/1.1\r\nHost: x\r\n{}{}Connection: close\r\n\r\n",
        auth(READ_USER),
        auth(WRITE_USER)
    );
    let r = raw_http(&lab.url, req.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "{}", r.head);
    let req = format!(
        "GET /registry/instances/vm-1/settings HTTP/1.1\r\nHost: x\r\n{}{}Connection: close\r\n\r\n",
        auth(("vm-1", "x")),
        auth(WRITE_USER)
    );
    assert_eq!(raw_http(&lab.url, req.as_bytes()).unwrap().status, 400);
}

fn lock(lab: &ServerLab, path: &str, user: (&str, &str)) -> (u16, String, String) {
    let body = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let r = Client::new()
        .request(reqwest::Method::from_bytes(b"LOCK").unwrap(), lab.at(path))
        .basic_auth(user.0, Some(user.1))
        .header("Timeout", "Infinite")
        .header("Depth", "infinity")
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let token = r
        .headers()
        .get("lock-token")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, token, r.text().unwrap())
}

fn put_as(lab: &ServerLab, path: &str, user: (&str, &str)) -> u16 {
    let r = Client::new()
        .put(lab.at(path))
        .basic_auth(user.0, Some(user.1))
        .body("x")
        .send();
    match r {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("PUT {path}: {e:?}\nserver log:\n{}", lab.log()),
    }
}

#[test]
fn locks_are_off_by_default_and_bounded_when_on() {
    let lab = strict(json!({}));
    assert_eq!(
        lock(&lab, "images/", WRITE_USER).0,
        405,
        "no locks by default"
    );

    let other = ("operator", "operator-pw");
    let lab = strict(json!({
        "max_lock_seconds": 2,
        "mounts": [{"prefix": "/images", "dir": "images", "locks": true}],
        "users": [
            {"username": WRITE_USER.0, "password": WRITE_USER.1, "role": "write"},
            {"username": other.0, "password": other.1, "role": "write"},
        ],
    }));
    put(&lab, "images/a/file", b"1".to_vec());
    assert_eq!(
        lock(&lab, "images/", other).0,
        423,
        "the whole mount cannot be locked"
    );
    let (status, token, body) = lock(&lab, "images/a/", other);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Second-2"), "Infinite is capped: {body}");
    // The lock binds the user who took it ...
    assert_eq!(put_as(&lab, "images/a/file", other), 423);
    let r = Client::new()
        .put(lab.at("images/a/file"))
        .basic_auth(other.0, Some(other.1))
        .header("If", format!("({token})"))
        .body("x")
        .send()
        .unwrap();
    assert!(r.status().is_success(), "with its token: {}", r.status());
    // ... and nobody else: the CPI's writes go through.
    assert!(matches!(
        put_as(&lab, "images/a/file", WRITE_USER),
        200..=204
    ));
    assert!(matches!(
        put_as(&lab, "images/a/new", WRITE_USER),
        200..=204
    ));
    // And it does not outlive its bound.
    let start = Instant::now();
    while put_as(&lab, "images/a/file", other) == 423 {
        assert!(start.elapsed() < PATIENCE, "the lock never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("lock gone after {:.1} s", start.elapsed().as_secs_f64());
}
