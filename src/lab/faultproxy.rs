//! A fault-injecting HTTP proxy in front of the real Ironic, for the faults the real server
//! cannot produce on demand: 503 (no free conductor), 409 NodeLocked, a dropped connection, a
//! deploy that reports failure, or a server that stops answering for a while.
//!
//! Everything else is forwarded unchanged to the real Ironic, one request per connection
//! (`Connection: close` both ways), so the CPI sees Ironic's real answers around the injected
//! ones. Every request is recorded, which is how tests count the CPI's attempts.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// What the proxy does instead of (or to) a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 Service Unavailable`, with this `Retry-After` value when given (any text, so that
    /// absurd values can be sent too).
    Unavailable { retry_after: Option<&'static str> },
    /// `409` with Ironic's NodeLocked message (transient: "please retry").
    NodeLocked,
    /// Read the request, then close the connection without an answer.
    Drop,
    /// Forward, and if the answer is a node in a deploy state (`deploying`, `wait call-back`,
    /// `active`), report it as `deploy failed` with a `last_error`. Rules of this kind are used
    /// up only by answers actually rewritten.
    FailDeploy,
    /// Forward to Ironic (which applies the request), then close the connection without the
    /// answer: the client cannot tell whether its change happened.
    DropAnswer,
    /// Forward to Ironic, then hold the answer this long before writing it: longer than the
    /// client's `request_timeout`, the change is applied and the client has given up on it.
    DelayAnswer { secs: u64 },
}

/// A request the proxy saw, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// `Some` when a fault was injected.
    pub fault: Option<Fault>,
}

struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && path.contains(&self.path_contains)
    }
}

#[derive(Default)]
struct State {
    rules: VecDeque<Rule>,
    seen: Vec<Seen>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    paused: AtomicBool,
    stopping: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test thread that panicked while holding the lock must not hide the proxy's records.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to put in place of Ironic's URL.
    pub url: String,
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (`http://HOST:PORT`, no path).
    pub fn start(upstream: &str) -> Result<FaultProxy, String> {
        let hostport = upstream
            .strip_prefix("http://")
            .ok_or_else(|| format!("fault proxy: upstream {upstream} is not an http:// URL"))?
            .trim_end_matches('/');
        let upstream: SocketAddr = hostport
            .parse()
            .map_err(|e| format!("fault proxy: upstream {hostport} is not IP:PORT: {e}"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("fault proxy: cannot listen: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("fault proxy: no local address: {e}"))?;
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State::default()),
            paused: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("faultproxy".into())
            .spawn(move || accept_loop(listener, s))
            .map_err(|e| format!("fault proxy: cannot start a thread: {e}"))?;
        Ok(FaultProxy {
            url: format!("http://{addr}"),
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// Answer the next `times` requests whose method is `method` (any when `None`) and whose
    /// path contains `path_contains` with `fault`. Rules apply in the order they were added.
    pub fn inject(&self, method: Option<&str>, path_contains: &str, fault: Fault, times: usize) {
        self.shared.state().rules.push_back(Rule {
            method: method.map(str::to_string),
            path_contains: path_contains.to_string(),
            fault,
            remaining: times,
        });
    }

    /// Forget every rule not used up yet.
    pub fn clear_faults(&self) {
        self.shared.state().rules.clear();
    }

    /// Hold every new request (unanswered, connection open) until [`FaultProxy::resume`].
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state().seen.clone()
    }

    /// Requests seen with this method whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.shared
            .state()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_contains))
            .count()
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.shared
            .state()
            .seen
            .iter()
            .filter(|s| s.fault.is_some())
            .count()
    }

    pub fn forget_seen(&self) {
        self.shared.state().seen.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.resume();
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("faultproxy-conn".into())
            .spawn(move || {
                if let Err(e) = serve(conn, &s) {
                    log::debug!("fault proxy: connection ended: {e}");
                }
            });
    }
}

/// One request as read from the client.
struct Request {
    method: String,
    path: String,
    /// Header lines without the request line, `Connection` and `Keep-Alive` removed.
    headers: Vec<String>,
    body: Vec<u8>,
}

fn serve(conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    while shared.paused.load(Ordering::SeqCst) && !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let fault = {
        let mut state = shared.state();
        let fault = state
            .rules
            .iter_mut()
            .find(|r| r.matches(&req.method, &req.path))
            .map(|r| {
                // FailDeploy is used up only when it actually rewrites an answer.
                if r.fault != Fault::FailDeploy {
                    r.remaining -= 1;
                }
                r.fault
            });
        state.rules.retain(|r| r.remaining > 0);
        fault
    };
    let mut out = conn;
    // Recorded before the client can see an answer, so that a test reading `seen` right after
    // its request returns finds it there.
    let record = |fault: Option<Fault>| {
        shared.state().seen.push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            fault,
        })
    };
    match fault {
        Some(Fault::Unavailable { retry_after }) => {
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            record(fault);
            write_answer(
                &mut out,
                "503 Service Unavailable",
                &extra,
                &ironic_error("No conductor service available (injected by the fault proxy)"),
            )
        }
        Some(Fault::NodeLocked) => {
            record(fault);
            write_answer(
                &mut out,
                "409 Conflict",
                "",
                &ironic_error(
                    "Node injected-node is locked by host fault-proxy, please retry after the \
                     current operation is completed.",
                ),
            )
        }
        Some(Fault::Drop) => {
            record(fault);
            let _ = out.shutdown(Shutdown::Both);
            Ok(())
        }
        Some(Fault::DropAnswer) => {
            forward(shared.upstream, &req)?;
            record(fault);
            let _ = out.shutdown(Shutdown::Both);
            Ok(())
        }
        Some(Fault::DelayAnswer { secs }) => {
            let (head, body) = forward(shared.upstream, &req)?;
            record(fault);
            std::thread::sleep(Duration::from_secs(secs));
            // The client has usually gone; a failed write is the point, not an error.
            let _ = write_raw(&mut out, &head, &body);
            Ok(())
        }
        Some(Fault::FailDeploy) => {
            let (head, body) = forward(shared.upstream, &req)?;
            match fail_deploy(&body) {
                Some(rewritten) => {
                    let mut state = shared.state();
                    if let Some(r) = state
                        .rules
                        .iter_mut()
                        .find(|r| r.fault == Fault::FailDeploy && r.matches(&req.method, &req.path))
                    {
                        r.remaining -= 1;
                    }
                    state.rules.retain(|r| r.remaining > 0);
                    drop(state);
                    record(fault);
                    write_raw(&mut out, &head, &rewritten)
                }
                None => {
                    record(None);
                    write_raw(&mut out, &head, &body)
                }
            }
        }
        None => {
            let (head, body) = forward(shared.upstream, &req)?;
            record(None);
            write_raw(&mut out, &head, &body)
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(io::Error::other("headers cut short"));
        }
        let h = h.trim_end_matches(['\r', '\n']).to_string();
        if h.is_empty() {
            break;
        }
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "content-length" {
            length = h[h.find(':').map_or(h.len(), |i| i + 1)..]
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("bad header {h:?}")))?;
        }
        if name != "connection" && name != "keep-alive" {
            headers.push(h);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

/// Send the request to Ironic; the answer's head (status line and headers, with
/// `Content-Length` recomputed by the writer) and its de-chunked body.
fn forward(upstream: SocketAddr, req: &Request) -> io::Result<(Vec<String>, Vec<u8>)> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(10))?;
    up.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for h in &req.headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut reader = BufReader::new(up);
    let mut lines = Vec::new();
    let mut chunked = false;
    let mut length = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(io::Error::other("upstream closed before the answer's head"));
        }
        let h = h.trim_end_matches(['\r', '\n']).to_string();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
            continue;
        }
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        lines.push(h);
    }
    let body = if chunked {
        read_chunked(&mut reader)?
    } else if let Some(n) = length {
        let mut b = vec![0u8; n];
        reader.read_exact(&mut b)?;
        b
    } else {
        let mut b = Vec::new();
        reader.read_to_end(&mut b)?;
        b
    };
    Ok((lines, body))
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let hex = size.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(hex, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size:?}")))?;
        if n == 0 {
            // Trailers end with an empty line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn write_raw(out: &mut TcpStream, head: &[String], body: &[u8]) -> io::Result<()> {
    let mut text = String::new();
    for h in head {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(text.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn write_answer(out: &mut TcpStream, status: &str, extra: &str, body: &[u8]) -> io::Result<()> {
    let head = vec![
        format!("HTTP/1.1 {status}"),
        "Content-Type: application/json".to_string(),
    ];
    let mut head = head;
    for h in extra.split("\r\n").filter(|h| !h.is_empty()) {
        head.push(h.to_string());
    }
    write_raw(out, &head, body)
}

/// Ironic's error body: `{"error_message": "<JSON string>"}` holding faultstring.
fn ironic_error(message: &str) -> Vec<u8> {
    let inner =
        serde_json::json!({"faultcode": "Server", "faultstring": message, "debuginfo": null});
    serde_json::json!({"error_message": inner.to_string()})
        .to_string()
        .into_bytes()
}

/// The node document with a deploy in progress or done turned into a failed deploy.
fn fail_deploy(body: &[u8]) -> Option<Vec<u8>> {
    let mut node: Value = serde_json::from_slice(body).ok()?;
    let state = node.get("provision_state")?.as_str()?;
    if !matches!(state, "deploying" | "wait call-back" | "active") {
        return None;
    }
    node["provision_state"] = Value::from("deploy failed");
    node["target_provision_state"] = Value::from("active");
    node["last_error"] = Value::from("Deploy step failed (injected by the fault proxy)");
    serde_json::to_vec(&node).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_states_become_failures_and_others_pass() {
        let active = br#"{"uuid":"u","provision_state":"active","target_provision_state":null}"#;
        let out: Value = serde_json::from_slice(&fail_deploy(active).unwrap()).unwrap();
        assert_eq!(out["provision_state"], "deploy failed");
        assert!(out["last_error"].as_str().unwrap().contains("injected"));
        assert!(fail_deploy(br#"{"provision_state":"available"}"#).is_none());
        assert!(fail_deploy(b"not json").is_none());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let mut r = BufReader::new(&b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n"[..]);
        assert_eq!(read_chunked(&mut r).unwrap(), b"Wikipedia");
    }

    /// A one-shot upstream answering every connection with a fixed body.
    fn upstream(body: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let _ = read_request(&mut r);
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn faults_are_injected_counted_and_used_up() {
        let proxy = FaultProxy::start(&upstream(r#"{"provision_state":"active"}"#)).unwrap();
        let http = reqwest::blocking::Client::new();
        let get = |p: &str| http.get(format!("{}{p}", proxy.url)).send();
        proxy.inject(
            Some("GET"),
            "/v1/nodes",
            Fault::Unavailable {
                retry_after: Some("1"),
            },
            2,
        );
        proxy.inject(None, "/v1/nodes", Fault::NodeLocked, 1);
        assert_eq!(get("/v1/nodes/a").unwrap().status(), 503);
        let r = get("/v1/nodes/a").unwrap();
        assert_eq!(r.headers()["retry-after"], "1");
        let locked = get("/v1/nodes/a").unwrap();
        assert_eq!(locked.status(), 409);
        assert!(locked.text().unwrap().contains("please retry"));
        assert_eq!(get("/v1/nodes/a").unwrap().status(), 200);
        proxy.inject(None, "/v1/ports", Fault::Drop, 1);
        assert!(get("/v1/ports").is_err());
        proxy.inject(None, "/v1/nodes/b", Fault::FailDeploy, 1);
        let failed: Value = get("/v1/nodes/b").unwrap().json().unwrap();
        assert_eq!(failed["provision_state"], "deploy failed");
        let again: Value = get("/v1/nodes/b").unwrap().json().unwrap();
        assert_eq!(again["provision_state"], "active");
        assert_eq!(proxy.count("GET", "/v1/nodes"), 6);
        assert_eq!(proxy.injected(), 5);
    }
}
