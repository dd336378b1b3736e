//! Limits on every phase of every connection, so that no client can hold the server.
//!
//! - **Connections.** At most `max_connections` are open. When a new one arrives at the cap, the
//!   connection that has waited longest for a request head (silent, trickling its head, or idle
//!   between requests) is closed to make room; when every connection is busy with a request, the
//!   new one gets a 503 and is closed. A silent connection costs no HTTP buffers: hyper only takes
//!   it over once its first bytes arrive.
//! - **Anonymous requests.** At most `max_anonymous_requests` run at once (503 beyond), so that
//!   anonymous downloads can never take the room authenticated clients (the CPI) and `/healthz`
//!   need.
//! - **Timeouts, on every phase.** The request head (and the idle time between requests) has
//!   `header_read_timeout_seconds`. A request body may make the server wait at most
//!   `body_read_timeout_seconds` for its next bytes, and a response may wait at most
//!   `response_write_timeout_seconds` for the client to take more (or for its share of the
//!   download budget). In both directions the waiting time is an allowance of that timeout,
//!   refilled by one second per `min_bytes_per_second` bytes the client moves and never above the
//!   timeout (`Meter`): clients that trickle, or stall after a fast start, run out after about one
//!   timeout. A response's progress is what the client's TCP stack acknowledged, not what the
//!   server's kernel took into its send buffer (hundreds of KiB that a client that never reads
//!   would otherwise get credit for). Time the server itself spends (disk, bcrypt) never counts
//!   against the client.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::config::ServerConfig;

/// The limits from the configuration, in the units the checks use.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_anonymous_requests: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub min_bytes_per_second: u64,
    pub send_buffer_bytes: u64,
}

impl Limits {
    pub fn from_config(cfg: &ServerConfig) -> Limits {
        Limits {
            max_connections: cfg.max_connections,
            max_anonymous_requests: cfg.max_anonymous_requests,
            header_timeout: cfg.header_read_timeout_seconds.get(),
            body_timeout: cfg.body_read_timeout_seconds.get(),
            write_timeout: cfg.response_write_timeout_seconds.get(),
            min_bytes_per_second: cfg.min_bytes_per_second,
            send_buffer_bytes: cfg.send_buffer_bytes,
        }
    }

    /// How often a connection's watchdog looks at it: often enough that no limit is overrun by
    /// more than half of itself.
    pub fn check_every(&self) -> Duration {
        let shortest = self
            .header_timeout
            .min(self.body_timeout)
            .min(self.write_timeout);
        (shortest / 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

const HEAD: u8 = 0;
const REQUEST: u8 = 1;

/// Why a connection was ended by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    HeadTimeout,
    BodyTooSlow,
    ResponseNotRead,
    Evicted,
}

impl Ending {
    pub fn describe(self, limits: &Limits) -> String {
        match self {
            Ending::HeadTimeout => format!(
                "no complete request head within {:?}",
                limits.header_timeout
            ),
            Ending::BodyTooSlow => format!(
                "request body too slow (waited over {:?} for it, or below {} bytes/s)",
                limits.body_timeout, limits.min_bytes_per_second
            ),
            Ending::ResponseNotRead => format!(
                "response not read (blocked over {:?}, or below {} bytes/s)",
                limits.write_timeout, limits.min_bytes_per_second
            ),
            Ending::Evicted => "closed to make room for a new connection".to_string(),
        }
    }
}

/// Time the server waits for a client in one direction, and the bytes moved.
///
/// Judged as an allowance of waiting time (a token bucket): it starts full at the timeout, time
/// spent waiting for the client drains it, each byte the client moves refills it by
/// `1 / min_rate` seconds, and it never holds more than the timeout. It runs out after one wait
/// of the timeout, after about one timeout for a client that moves a byte now and then, and one
/// timeout after the last burst for a client that was fast and then stopped (a receiver that does
/// not read still takes a few bytes now and then, when its kernel compacts its receive queue): a
/// fast start banks no licence to stall. A response counts as progress only what the client's TCP
/// stack acknowledged (`Conn::check`), and its waits for the socket and for the download budget
/// are one wait: a download queued behind stalled ones, then let through to fill its own send
/// buffer, has not earned a second timeout.
#[derive(Default)]
pub struct Meter {
    /// What the server is waiting for (`SOCKET`, `BUDGET`): one wait lasts while any of them does,
    /// so that two reasons at once do not drain the allowance twice.
    reasons: AtomicU8,
    /// Milliseconds (since the tracker's start) + 1 at which the current wait began; 0 = none.
    waiting_since: AtomicU64,
    /// Milliseconds of finished waits.
    waited: AtomicU64,
    bytes: AtomicU64,
    /// The allowance in milliseconds, and the waits and progress it has accounted for (only the
    /// watchdog writes these).
    allowance: AtomicI64,
    counted_waited: AtomicU64,
    counted_bytes: AtomicU64,
}

impl Meter {
    /// The socket: the client sends or takes no bytes.
    pub const SOCKET: u8 = 1;
    /// A download waits for its share of the download budget, which runs out only when clients
    /// stop reading.
    pub const BUDGET: u8 = 2;

    pub fn wait(&self, now: u64) {
        self.wait_for(now, Self::SOCKET);
    }

    pub fn wait_for(&self, now: u64, reason: u8) {
        if self.reasons.fetch_or(reason, Ordering::Relaxed) == 0 {
            let _ = self.waiting_since.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    pub fn progress(&self, now: u64, n: u64) {
        self.settle(now);
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// End the socket wait, if any (the side moved bytes, or stopped asking).
    pub fn settle(&self, now: u64) {
        self.settle_for(now, Self::SOCKET);
    }

    /// End the wait for `reason`; the wait goes on while another reason holds it.
    pub fn settle_for(&self, now: u64, reason: u8) {
        let before = self.reasons.fetch_and(!reason, Ordering::Relaxed);
        if before & reason == 0 || before & !reason != 0 {
            return;
        }
        let since = self.waiting_since.swap(0, Ordering::Relaxed);
        if since > 0 {
            self.waited
                .fetch_add(now.saturating_sub(since - 1), Ordering::Relaxed);
        }
    }

    fn waited_until(&self, now: u64) -> u64 {
        let since = self.waiting_since.load(Ordering::Relaxed);
        let current = if since > 0 {
            now.saturating_sub(since - 1)
        } else {
            0
        };
        self.waited.load(Ordering::Relaxed) + current
    }

    /// Whether the client has used up its allowance (see the type). `moved` is how many bytes
    /// the client has moved so far, by whatever measure the caller keeps using (default: the
    /// bytes counted here). With `min_rate` 0 any progress refills it: only a single wait of the
    /// timeout counts.
    fn exceeded(&self, now: u64, timeout: Duration, min_rate: u64, moved: Option<u64>) -> bool {
        let cap = timeout.as_millis() as i64;
        let waited = self.waited_until(now);
        let total = moved.unwrap_or_else(|| self.bytes.load(Ordering::Relaxed));
        let drained = waited.saturating_sub(self.counted_waited.swap(waited, Ordering::Relaxed));
        let moved = total.saturating_sub(self.counted_bytes.swap(total, Ordering::Relaxed));
        let refill = match min_rate {
            0 if moved > 0 => cap,
            0 => 0,
            rate => (moved.saturating_mul(1000) / rate).min(cap as u64) as i64,
        };
        let left = (self.allowance.load(Ordering::Relaxed) - drained as i64 + refill).min(cap);
        self.allowance.store(left, Ordering::Relaxed);
        left < 0
    }

    /// A new request: a full allowance.
    fn restart(&self, now: u64, timeout: Duration) {
        self.counted_waited
            .store(self.waited_until(now), Ordering::Relaxed);
        self.allowance
            .store(timeout.as_millis() as i64, Ordering::Relaxed);
    }
}

/// One connection, as the tracker, the watchdog and the request handler see it.
pub struct Conn {
    id: u64,
    tracker: Arc<Tracker>,
    phase: AtomicU8,
    phase_since: AtomicU64,
    anonymous: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
    /// Request body bytes the server waited for.
    pub body: Meter,
    /// Response bytes the server waited to write, or waited for the download budget to read
    /// (`Meter::BUDGET`, see `body::FileStream`).
    pub write: Meter,
}

impl Conn {
    pub fn now(&self) -> u64 {
        self.tracker.now()
    }

    /// A request head arrived: the request phase begins.
    pub fn begin_request(&self) {
        let now = self.now();
        let limits = &self.tracker.limits;
        self.body.restart(now, limits.body_timeout);
        self.write.restart(now, limits.write_timeout);
        self.phase_since.store(now, Ordering::Relaxed);
        self.phase.store(REQUEST, Ordering::Release);
    }

    /// The response ended (sent, or dropped when the client went away): the connection waits for
    /// the next request head, and an anonymous request gives its place back.
    pub fn end_request(&self) {
        let now = self.now();
        self.body.settle(now);
        self.write.settle_for(now, Meter::BUDGET);
        self.phase_since.store(now, Ordering::Relaxed);
        self.phase.store(HEAD, Ordering::Release);
        if self.anonymous.swap(false, Ordering::AcqRel) {
            self.tracker.anonymous.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Count this connection's request as anonymous; `false` when the anonymous places are full.
    pub fn begin_anonymous(&self) -> bool {
        if self.anonymous.load(Ordering::Acquire) {
            return true;
        }
        let max = self.tracker.limits.max_anonymous_requests;
        let taken = self
            .tracker
            .anonymous
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            self.anonymous.store(true, Ordering::Release);
        } else {
            self.tracker
                .refused_anonymous
                .fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The limit this connection broke, if any. `acked` is how many bytes the client's TCP stack
    /// has acknowledged on this connection (TCP_INFO), when the kernel says: a response's progress
    /// is what reached the client, not what the server's kernel buffered for it.
    pub fn check(&self, acked: Option<u64>) -> Option<Ending> {
        let limits = &self.tracker.limits;
        let now = self.now();
        if self.evicted.load(Ordering::Acquire) {
            return Some(Ending::Evicted);
        }
        if self.phase.load(Ordering::Acquire) == HEAD {
            let since = self.phase_since.load(Ordering::Relaxed);
            if now.saturating_sub(since) > limits.header_timeout.as_millis() as u64 {
                return Some(Ending::HeadTimeout);
            }
            return None;
        }
        if self
            .body
            .exceeded(now, limits.body_timeout, limits.min_bytes_per_second, None)
        {
            return Some(Ending::BodyTooSlow);
        }
        if self.write.exceeded(
            now,
            limits.write_timeout,
            limits.min_bytes_per_second,
            acked,
        ) {
            return Some(Ending::ResponseNotRead);
        }
        None
    }

    /// Resolves when the tracker closes this connection to make room.
    pub async fn evicted(&self) {
        loop {
            let notified = self.evict.notified();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Record why the server ended this connection (for the periodic summary).
    pub fn ended(&self, why: Ending) {
        let counter = match why {
            Ending::HeadTimeout => &self.tracker.head_timeouts,
            Ending::BodyTooSlow => &self.tracker.slow_bodies,
            Ending::ResponseNotRead => &self.tracker.unread_responses,
            Ending::Evicted => &self.tracker.evicted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn limits(&self) -> &Limits {
        &self.tracker.limits
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.anonymous.swap(false, Ordering::AcqRel) {
            self.tracker.anonymous.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Unregisters a connection when its task ends, however it ends.
pub struct Registration {
    pub conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut m) = self.conn.tracker.conns.lock() {
            m.remove(&self.conn.id);
        }
    }
}

/// Every open connection, and the counters of what the limits did.
pub struct Tracker {
    pub limits: Limits,
    start: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    anonymous: AtomicUsize,
    refused: AtomicU64,
    refused_anonymous: AtomicU64,
    evicted: AtomicU64,
    head_timeouts: AtomicU64,
    slow_bodies: AtomicU64,
    unread_responses: AtomicU64,
}

/// What became of a new connection.
pub enum Admission {
    Admitted(Registration),
    /// Every connection is busy with a request: answer 503 and close.
    Refused,
}

impl Tracker {
    pub fn new(limits: Limits) -> Arc<Tracker> {
        Arc::new(Tracker {
            limits,
            start: Instant::now(),
            next_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            anonymous: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            refused_anonymous: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            head_timeouts: AtomicU64::new(0),
            slow_bodies: AtomicU64::new(0),
            unread_responses: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Register a new connection, making room at the cap by closing the connection that has
    /// waited longest for a request head.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let Ok(mut conns) = self.conns.lock() else {
            return Admission::Refused;
        };
        if conns.len() >= self.limits.max_connections {
            let victim = conns
                .values()
                .filter(|c| {
                    c.phase.load(Ordering::Acquire) == HEAD && !c.evicted.load(Ordering::Acquire)
                })
                .min_by_key(|c| c.phase_since.load(Ordering::Relaxed))
                .cloned();
            match victim {
                Some(v) => {
                    v.evicted.store(true, Ordering::Release);
                    v.evict.notify_one();
                    // It leaves the map when its task ends; do not count it twice meanwhile.
                    conns.remove(&v.id);
                }
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Admission::Refused;
                }
            }
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tracker: self.clone(),
            phase: AtomicU8::new(HEAD),
            phase_since: AtomicU64::new(self.now()),
            anonymous: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            body: Meter::default(),
            write: Meter::default(),
        });
        conns.insert(conn.id, conn.clone());
        Admission::Admitted(Registration { conn })
    }

    pub fn open(&self) -> usize {
        self.conns.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// What the limits did since the last call, as a log line (`None` when nothing happened).
    pub fn take_summary(&self) -> Option<String> {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let counts = [
            ("refused at the connection cap", take(&self.refused)),
            (
                "anonymous requests refused (max_anonymous_requests)",
                take(&self.refused_anonymous),
            ),
            ("evicted while waiting for a request", take(&self.evicted)),
            ("closed: no request head in time", take(&self.head_timeouts)),
            ("closed: request body too slow", take(&self.slow_bodies)),
            ("closed: response not read", take(&self.unread_responses)),
        ];
        let shown: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        (!shown.is_empty()).then(|| {
            format!(
                "connection limits: {} ({} connections open)",
                shown.join(", "),
                self.open()
            )
        })
    }
}

/// The connection's byte stream, metering how long writes wait for the client.
pub struct Metered<I> {
    inner: I,
    conn: Arc<Conn>,
}

impl<I> Metered<I> {
    pub fn new(inner: I, conn: Arc<Conn>) -> Metered<I> {
        Metered { inner, conn }
    }

    fn note(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => self.conn.write.wait(self.conn.now()),
            Poll::Ready(Ok(n)) => self.conn.write.progress(self.conn.now(), *n as u64),
            Poll::Ready(Err(_)) => self.conn.write.settle(self.conn.now()),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_pending() {
            self.conn.write.wait(self.conn.now());
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            max_anonymous_requests: 1,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            min_bytes_per_second: 1000,
            send_buffer_bytes: 0,
        }
    }

    /// A meter as a new request starts it, judged every second like the watchdog does.
    fn run(events: &[(u64, u64)], t: Duration, rate: u64) -> Option<u64> {
        // events: (wait this many ms, then move this many bytes)
        let m = Meter::default();
        m.restart(0, t);
        let mut now = 0;
        for &(wait, bytes) in events {
            m.wait(now);
            for _ in 0..wait / 1000 {
                now += 1000;
                if m.exceeded(now, t, rate, None) {
                    return Some(now);
                }
            }
            now += wait % 1000;
            m.progress(now, bytes);
        }
        None
    }

    #[test]
    fn meter_catches_long_waits_trickles_and_stalls_after_a_burst() {
        let t = Duration::from_secs(10);
        // One long wait.
        assert_eq!(run(&[(60_000, 1)], t, 1000), Some(11_000));
        // A byte every nine seconds: each wait is short, the rate is not.
        let trickle = [(9_000, 1); 10];
        assert!(run(&trickle, t, 1000).is_some_and(|at| at <= 20_000));
        // Fast at first, then a few bytes now and then: cut a timeout after the burst.
        let mut burst = vec![(0, 50_000_000)];
        burst.extend([(6_000, 100); 10]);
        assert!(run(&burst, t, 1000).is_some_and(|at| at <= 12_000));
        // A steady slow client above the rate is fine, and so is one that never waits.
        assert_eq!(run(&[(2_000, 4_000); 30], t, 1000), None);
        assert_eq!(run(&[(0, 1); 30], t, 1000), None);
        // Without a rate, only a single wait of the timeout counts.
        assert_eq!(run(&trickle, t, 0), None);
    }

    #[test]
    fn two_reasons_make_one_wait_and_only_acknowledged_bytes_refill() {
        let t = Duration::from_secs(10);
        // A full socket and a spent budget at once drain the allowance once; the wait lasts
        // while either does.
        let m = Meter::default();
        m.restart(0, t);
        m.wait_for(0, Meter::SOCKET);
        m.wait_for(0, Meter::BUDGET);
        assert!(!m.exceeded(6_000, t, 1000, Some(0)));
        m.settle_for(6_000, Meter::SOCKET);
        assert!(!m.exceeded(9_000, t, 1000, Some(0)));
        assert!(m.exceeded(11_000, t, 1000, Some(0)));
        // 400 KB taken by the server's send buffer, none of it acknowledged: no credit.
        let stalled = |acked: Option<u64>| {
            let m = Meter::default();
            m.restart(0, t);
            m.wait(0);
            m.progress(5_000, 400_000);
            m.wait(5_000);
            m.exceeded(11_000, t, 1000, acked)
        };
        assert!(stalled(Some(0)));
        assert!(
            !stalled(None),
            "counted by bytes written, the kernel's buffer earns a timeout"
        );
    }

    #[test]
    fn the_cap_evicts_the_longest_waiting_head_and_refuses_when_all_are_busy() {
        let t = Tracker::new(limits(2));
        let Admission::Admitted(a) = t.admit() else {
            panic!("refused")
        };
        let Admission::Admitted(b) = t.admit() else {
            panic!("refused")
        };
        b.conn.begin_request();
        let Admission::Admitted(_c) = t.admit() else {
            panic!("refused")
        };
        assert_eq!(a.conn.check(None), Some(Ending::Evicted));
        assert_eq!(b.conn.check(None), None);
        _c.conn.begin_request();
        assert!(matches!(t.admit(), Admission::Refused));
        assert!(t.take_summary().unwrap().contains("1 refused"));
    }

    #[test]
    fn anonymous_places_are_given_back() {
        let t = Tracker::new(limits(10));
        let Admission::Admitted(a) = t.admit() else {
            panic!()
        };
        let Admission::Admitted(b) = t.admit() else {
            panic!()
        };
        assert!(a.conn.begin_anonymous());
        assert!(a.conn.begin_anonymous(), "the same request asks again");
        assert!(!b.conn.begin_anonymous());
        a.conn.end_request();
        assert!(b.conn.begin_anonymous());
        drop(b);
        let Admission::Admitted(c) = t.admit() else {
            panic!()
        };
        assert!(
            c.conn.begin_anonymous(),
            "a closed connection gives its place back"
        );
    }
}
