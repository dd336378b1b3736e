//! One stderr line per request, written by a thread of its own.
//!
//! Lines are handed over a channel and written in batches, so a request never waits for a write(2)
//! on stderr. The line holds the method, path (no query), status, body bytes, duration, remote
//! address and user name; never an `Authorization` header or a password.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

pub struct AccessLog {
    tx: Mutex<Option<Sender<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    pub fn start() -> Arc<AccessLog> {
        let (tx, rx) = channel::<String>();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx))
            .ok();
        Arc::new(AccessLog {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(thread),
        })
    }

    pub fn sender(&self) -> Option<Sender<String>> {
        self.tx.lock().ok().and_then(|g| g.clone())
    }

    /// Write out what is queued and stop the thread (at shutdown).
    pub fn finish(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

fn writer(rx: Receiver<String>) {
    let stderr = std::io::stderr();
    while let Ok(line) = rx.recv() {
        let mut out = stderr.lock();
        let _ = out.write_all(line.as_bytes());
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

/// What the line needs, gathered while the request is handled; the line is written when the
/// response body is finished or dropped (so a cut download shows the bytes really sent).
pub struct Record {
    pub tx: Sender<String>,
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
            printable(&self.path),
            self.status,
        );
        let _ = self.tx.send(line);
    }
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
    fn lines_stay_one_line() {
        assert_eq!(printable("/a b\"\n"), "/a%20b%22%0A");
        let (tx, rx) = channel();
        Record {
            tx,
            start: Instant::now(),
            remote: "127.0.0.1:5".parse().unwrap(),
            user: Some(Arc::from("director")),
            method: "GET".into(),
            path: "/images/x".into(),
            status: 200,
        }
        .emit(12, true);
        let line = rx.recv().unwrap();
        assert!(
            line.contains(" access 127.0.0.1:5 director \"GET /images/x\" 200 12 "),
            "{line}"
        );
        assert!(line.ends_with("ms\n"));
    }
}
