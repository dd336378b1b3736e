//! The client against a hand-written HTTP server that misbehaves as the real Ironic cannot be
//! made to: a body that never ends, a Content-Length of gigabytes, pagination whose `next` link
//! comes back to where it was. Each must end in a clear error, having read no more than the
//! cap, without a panic.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::{IronicClient, IronicError, NodeQuery};
use crate::config::IronicConfig;

/// What the server answers to one request line.
enum Reply {
    Json(String),
    /// 200, chunked, chunks of 64 KiB forever (until the client goes away).
    Endless {
        status: u16,
    },
    /// 200 with this Content-Length, a few bytes, then silence.
    Declared(u64),
}

struct Server {
    url: String,
    /// Body bytes the server managed to write, over all connections.
    written: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
}

fn serve(reply: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let reply = Arc::new(reply);
    let (w, r) = (written.clone(), requests.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (reply, w, r) = (reply.clone(), w.clone(), r.clone());
            std::thread::spawn(move || {
                // A write error is the client hanging up: that is how these end.
                let _ = answer(conn, &*reply, &w, &r);
            });
        }
    });
    Server {
        url,
        written,
        requests,
    }
}

fn answer(
    conn: TcpStream,
    reply: &dyn Fn(usize, &str) -> Reply,
    written: &AtomicU64,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request = line.trim_end().to_string();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
        }
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        match reply(n, &request) {
            Reply::Json(body) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                written.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
            Reply::Endless { status } => {
                write!(
                    out,
                    "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                let chunk = vec![b' '; 64 * 1024];
                loop {
                    write!(out, "{:x}\r\n", chunk.len())?;
                    out.write_all(&chunk)?;
                    out.write_all(b"\r\n")?;
                    written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            }
            Reply::Declared(len) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{\"nodes\": ["
                )?;
                written.fetch_add(11, Ordering::SeqCst);
                // Hold the connection as a server would while "sending" the rest.
                std::thread::sleep(std::time::Duration::from_secs(30));
                return Ok(());
            }
        }
    }
}

const CAP: u64 = 1024 * 1024;

fn client(server: &Server) -> IronicClient {
    let mut cfg: IronicConfig = serde_json::from_value(json!({ "url": server.url })).unwrap();
    cfg.max_response_bytes = CAP;
    cfg.page_size = 2;
    cfg.retry.max_attempts = 2;
    cfg.retry.initial_delay = ironic_cpi_common::Seconds::from_millis(10);
    cfg.request_timeout = ironic_cpi_common::Seconds::from_secs(20);
    IronicClient::new(&cfg).unwrap()
}

#[test]
fn an_endless_body_stops_at_the_cap_with_an_error_naming_url_and_cap() {
    let server = serve(|_, _| Reply::Endless { status: 200 });
    let c = client(&server);
    let e = c.get_node("n1").unwrap_err();
    let IronicError::ResponseTooLarge {
        cap,
        declared,
        applied,
        ..
    } = &e
    else {
        panic!("expected ResponseTooLarge, got {e:?}");
    };
    assert_eq!((*cap, *declared, *applied), (CAP, None, false));
    let msg = e.to_string();
    for part in ["/v1/nodes/n1", "1048576", "ironic.max_response_bytes"] {
        assert!(msg.contains(part), "'{part}' missing in: {msg}");
    }
    // Not retried: the same server sends the same answer.
    assert_eq!(c.request_count(), 1);
    // The client stopped reading just past the cap; what the server wrote beyond it sat in
    // socket buffers (a few MiB on loopback), not in the client.
    let written = server.written.load(Ordering::SeqCst);
    assert!(
        written < CAP + 32 * 1024 * 1024,
        "the server wrote {written} bytes before the client hung up"
    );
}

#[test]
fn an_oversized_content_length_is_refused_before_reading() {
    let server = serve(|_, _| Reply::Declared(10 * 1024 * 1024 * 1024));
    let c = client(&server);
    let e = c
        .node_pages(&NodeQuery::default(), &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        matches!(
            e,
            IronicError::ResponseTooLarge {
                declared: Some(10737418240),
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("/v1/nodes") && msg.contains("10737418240") && msg.contains("1048576"),
        "{msg}"
    );
    assert!(!e.is_transient(), "the same answer would come again");
}

#[test]
fn an_endless_error_body_is_cut_and_the_status_kept() {
    let server = serve(|_, _| Reply::Endless { status: 404 });
    let c = client(&server);
    let e = c.get_node("gone").unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().len() < 2000, "{e}");
}

/// A page of two nodes whose `next` link names `marker`.
fn page(first: usize, marker: &str) -> Reply {
    let node = |i: usize| json!({"uuid": format!("00000000-0000-4000-8000-{i:012}")});
    Reply::Json(
        json!({"nodes": [node(first), node(first + 1)],
               "next": format!("http://ironic.invalid/v1/nodes?limit=2&marker={marker}")})
        .to_string(),
    )
}

#[test]
fn a_next_link_that_repeats_its_marker_stops_the_listing() {
    // Forever the same marker; after 50 pages an end, so a client that follows blindly
    // returns (and fails the test) instead of hanging it.
    let server = serve(|n, _| {
        if n > 50 {
            Reply::Json(json!({"nodes": []}).to_string())
        } else {
            page(2 * n, "aaaa")
        }
    });
    let c = client(&server);
    let mut pages = 0;
    let e = c
        .node_pages(&NodeQuery::default(), &mut |p| {
            assert_eq!(p.len(), 2);
            pages += 1;
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(e, IronicError::Decode { .. }), "{e:?}");
    assert!(e.to_string().contains("repeats marker 'aaaa'"), "{e}");
    assert_eq!(
        pages, 2,
        "the second page came by the marker; the third would repeat it"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    // A cycle: a, b, a.
    let server = serve(|n, _| page(2 * n, if n % 2 == 1 { "a" } else { "b" }));
    let e = client(&server)
        .list_nodes(&NodeQuery::default())
        .unwrap_err();
    assert!(e.to_string().contains("repeats marker 'a'"), "{e}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn pages_stream_and_a_consumer_may_stop_early() {
    let server = serve(|n, line| {
        assert!(line.contains("limit=2"), "{line}");
        page(2 * n, &format!("m{n}"))
    });
    let c = client(&server);
    let mut seen = 0;
    c.node_pages(&NodeQuery::default(), &mut |p| {
        seen += p.len();
        if seen >= 6 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, 6);
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}
