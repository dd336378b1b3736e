//! One stderr line per request, written in batches by a thread of its own.
//!
//! Requests append their line to a shared buffer; the writer thread empties it every
//! `FLUSH_EVERY` (sooner when it grows large). A request never waits for a write(2) on stderr, and
//! under load there is no wake-up per request. The line holds the method, path (no query, and
//! unguessable names hidden: a path segment of 32 or more hex digits, like the random directory
//! of a published config drive, works as a password and is logged as `<hidden>`), status,
//! body bytes, duration, remote address and user name; never an `Authorization` header or a
//! password.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffered bytes that make the writer flush before its timer.
const FLUSH_SIZE: usize = 64 * 1024;

struct Shared {
    buf: Mutex<(Vec<u8>, bool)>,
    wake: Condvar,
}

pub struct AccessLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    pub fn start() -> Arc<AccessLog> {
        let shared = Arc::new(Shared {
            buf: Mutex::new((Vec::with_capacity(FLUSH_SIZE), false)),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(&s))
            .ok();
        Arc::new(AccessLog {
            shared,
            thread: Mutex::new(thread),
        })
    }

    pub fn sender(&self) -> Option<Sender> {
        Some(Sender(self.shared.clone()))
    }

    /// Write out what is queued and stop the thread (at shutdown).
    pub fn finish(&self) {
        if let Ok(mut g) = self.shared.buf.lock() {
            g.1 = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

/// A handle to queue lines.
#[derive(Clone)]
pub struct Sender(Arc<Shared>);

impl Sender {
    pub fn send(&self, line: &str) {
        if let Ok(mut g) = self.0.buf.lock() {
            g.0.extend_from_slice(line.as_bytes());
            if g.0.len() >= FLUSH_SIZE {
                self.0.wake.notify_one();
            }
        }
    }
}

fn writer(shared: &Shared) {
    let mut out = Vec::with_capacity(FLUSH_SIZE);
    loop {
        let stop = {
            let Ok(g) = shared.buf.lock() else { return };
            let Ok((mut g, _)) = shared.wake.wait_timeout(g, FLUSH_EVERY) else {
                return;
            };
            std::mem::swap(&mut g.0, &mut out);
            g.1
        };
        if !out.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&out);
            let _ = err.flush();
            out.clear();
        }
        if stop {
            return;
        }
    }
}

/// What the line needs, gathered while the request is handled; the line is written when the
/// response body is finished or dropped (so a cut download shows the bytes really sent).
pub struct Record {
    pub tx: Sender,
    pub start: Instant,
    pub remote: SocketAddr,
    pub user: Option<Arc<str>>,
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Record {
    pub fn emit(self, bytes: u64, complete: bool) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let ts = humantime::format_rfc3339_millis(SystemTime::now());
        let user = self.user.as_deref().unwrap_or("-");
        let cut = if complete { "" } else { " (cut)" };
        let line = format!(
            "{ts} access {} {} \"{} {}\" {} {bytes} {ms:.3}ms{cut}\n",
            self.remote,
            printable(user),
            self.method,
            printable(&hide_tokens(&self.path)),
            self.status,
        );
        self.tx.send(&line);
    }
}

/// `path` with every segment of 32 or more hex digits replaced by `<hidden>`.
pub fn hide_tokens(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() >= 32 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                "<hidden>"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Keep a log line one line: quote characters and controls are percent-encoded.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' || c.is_control() || c == ' ' {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unguessable_names_are_hidden() {
        let token = "0123456789abcdef".repeat(4);
        assert_eq!(
            hide_tokens(&format!(
                "/metadata/2f0e3c1a-aaaa-bbbb-cccc-0123456789ab/{token}/x"
            )),
            "/metadata/2f0e3c1a-aaaa-bbbb-cccc-0123456789ab/<hidden>/x"
        );
        assert_eq!(hide_tokens("/images/abc/root.img"), "/images/abc/root.img");
    }

    #[test]
    fn lines_stay_one_line() {
        assert_eq!(printable("/a b\"\n"), "/a%20b%22%0A");
        let shared = Arc::new(Shared {
            buf: Mutex::new((Vec::new(), false)),
            wake: Condvar::new(),
        });
        Record {
            tx: Sender(shared.clone()),
            start: Instant::now(),
            remote: "127.0.0.1:5".parse().unwrap(),
            user: Some(Arc::from("director")),
            method: "GET".into(),
            path: "/images/x".into(),
            status: 200,
        }
        .emit(12, true);
        let line = String::from_utf8(shared.buf.lock().unwrap().0.clone()).unwrap();
        assert!(
            line.contains(" access 127.0.0.1:5 director \"GET /images/x\" 200 12 "),
            "{line}"
        );
        assert!(line.ends_with("ms\n"));
    }
}
