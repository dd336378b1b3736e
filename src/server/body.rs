//! Request and response bodies.
//!
//! Responses are one small enum instead of a boxed trait object: the fast paths (registry, small
//! files) hand out a `Bytes` that is already in memory, and large files stream from disk in
//! chunks whose memory comes out of one budget shared by every download (`Budget`), so memory
//! stays bounded whatever the file sizes and however many clients stop reading.
//!
//! Both directions tell the connection's limits (`limits::Conn`) when the server waits for the
//! client, and the end of a response ends the request's phase.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::access_log::Record;
use super::limits::{Conn, Meter};

/// The largest piece of a file read at once; smaller ones when the budget runs low.
const READ_CHUNK: usize = 256 * 1024;
/// The smallest piece, when many downloads share the budget.
const MIN_CHUNK: usize = 8 * 1024;

/// Memory every file download together may hold in read buffers, counted in KiB. A chunk keeps
/// its share until hyper has written it out, so clients that stop reading hold at most this much
/// between them; a download waits (fairly, first come first served) when it is spent.
///
/// Each download reads chunks of at most its fair part of the budget (the budget divided by the
/// downloads running), and reads ahead only while half the budget is free: clients that stop
/// reading then hold one small chunk each, instead of a few of them holding it all while the
/// others queue.
#[derive(Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total_kib: usize,
    downloads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        let total_kib = (bytes / 1024).clamp(64, Semaphore::MAX_PERMITS as u64) as usize;
        Budget {
            sem: Arc::new(Semaphore::new(total_kib)),
            total_kib,
            downloads: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn chunk(&self, remaining: u64) -> usize {
        let running = self
            .downloads
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        let fair = (self.total_kib * 1024 / running).clamp(MIN_CHUNK, READ_CHUNK);
        fair.min(self.total_kib * 1024)
            .min(remaining.try_into().unwrap_or(usize::MAX))
    }

    fn may_read_ahead(&self, n: usize) -> bool {
        let avail = self.sem.available_permits();
        avail * 2 >= self.total_kib && avail >= n.div_ceil(1024)
    }
}

/// A chunk read from disk and the share of the budget it holds until hyper drops it.
struct Chunk {
    data: Vec<u8>,
    _share: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

pub enum Inner {
    Full(Option<Bytes>),
    Dav(dav_server::body::Body),
    File(FileStream),
}

pub struct ResponseBody {
    inner: Inner,
    sent: u64,
    done: bool,
    /// The response's Content-Length: bodies hyper never polls (HEAD, empty) are still complete.
    expected: Option<u64>,
    record: Option<Record>,
    /// The connection, whose request phase ends with this body.
    conn: Option<Arc<Conn>>,
}

impl ResponseBody {
    pub fn full(b: impl Into<Bytes>) -> ResponseBody {
        Self::new(Inner::Full(Some(b.into())))
    }

    pub fn empty() -> ResponseBody {
        Self::new(Inner::Full(None))
    }

    pub fn dav(b: dav_server::body::Body) -> ResponseBody {
        Self::new(Inner::Dav(b))
    }

    pub fn file(f: FileStream) -> ResponseBody {
        Self::new(Inner::File(f))
    }

    fn new(inner: Inner) -> ResponseBody {
        ResponseBody {
            inner,
            sent: 0,
            done: false,
            expected: None,
            record: None,
            conn: None,
        }
    }

    /// End the connection's request phase when this body ends.
    pub fn end_request_of(&mut self, conn: Arc<Conn>) {
        if let Inner::File(f) = &mut self.inner {
            f.conn = Some(conn.clone());
        }
        self.conn = Some(conn);
    }

    /// Write the access log line when this body ends (or is dropped, when the client goes away).
    pub fn log_with(&mut self, record: Record, expected: Option<u64>) {
        self.record = Some(record);
        self.expected = expected;
    }

    fn finish(&mut self, complete: bool) {
        self.done = true;
        if let Some(r) = self.record.take() {
            r.emit(self.sent, complete);
        }
        if let Some(c) = self.conn.take() {
            c.end_request();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.done || self.is_end_stream() || self.expected == Some(self.sent);
        self.finish(complete);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Dav(b) => Pin::new(b).poll_frame(cx),
            Inner::File(f) => f.poll_chunk(cx).map(|o| o.map(|r| r.map(Frame::data))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            Inner::Dav(b) => b.is_end_stream(),
            Inner::File(f) => f.remaining == 0 && f.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Dav(b) => b.size_hint(),
            Inner::File(f) => SizeHint::with_exact(f.remaining + f.pending_len),
        }
    }
}

type Read = Pin<Box<dyn Future<Output = io::Result<Bytes>> + Send>>;

impl Drop for FileStream {
    fn drop(&mut self) {
        self.budget
            .downloads
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A byte range of an open file, read in chunks on the blocking pool, each chunk paid for out of
/// the download budget before it is read.
///
/// Waiting for a share of the budget counts as the response waiting for its client (one wait with
/// waiting for the socket, `Meter::BUDGET`): the budget runs out only when clients stop taking
/// what they were sent, and a download queued behind them must not hold its connection past
/// `response_write_timeout_seconds` either (else a crowd of stalled downloads would take a timeout
/// for those holding shares, then another for those queued).
pub struct FileStream {
    file: Arc<File>,
    budget: Budget,
    offset: u64,
    remaining: u64,
    pending: Option<Read>,
    pending_len: u64,
    /// Set by the pending read once it holds its share (then it only waits for the disk).
    paid: Arc<std::sync::atomic::AtomicBool>,
    conn: Option<Arc<Conn>>,
}

impl FileStream {
    pub fn new(file: File, offset: u64, len: u64, budget: Budget) -> FileStream {
        budget
            .downloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FileStream {
            file: Arc::new(file),
            budget,
            offset,
            remaining: len,
            pending: None,
            pending_len: 0,
            paid: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            conn: None,
        }
    }

    fn start_read(&mut self) {
        if self.remaining == 0 || self.pending.is_some() {
            return;
        }
        let n = self.budget.chunk(self.remaining);
        let offset = self.offset;
        self.offset += n as u64;
        self.remaining -= n as u64;
        self.pending_len = n as u64;
        let (file, sem) = (self.file.clone(), self.budget.sem.clone());
        let kib = n.div_ceil(1024) as u32;
        let paid = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.paid = paid.clone();
        self.pending = Some(Box::pin(async move {
            let share = sem
                .acquire_many_owned(kib)
                .await
                .map_err(io::Error::other)?;
            paid.store(true, std::sync::atomic::Ordering::Release);
            let data = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, offset).map(|_| buf)
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Bytes::from_owner(Chunk {
                data,
                _share: share,
            }))
        }));
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        self.start_read();
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = pending.as_mut().poll(cx);
        if let Some(c) = &self.conn {
            if polled.is_pending() && !self.paid.load(std::sync::atomic::Ordering::Acquire) {
                c.write.wait_for(c.now(), Meter::BUDGET);
            } else {
                c.write.settle_for(c.now(), Meter::BUDGET);
            }
        }
        let read = ready!(polled);
        self.pending = None;
        self.pending_len = 0;
        match read {
            Ok(bytes) => {
                // Read the next chunk while hyper writes this one, when the budget allows it
                // without waiting; a client that stops reading then holds one chunk, not two.
                if self
                    .budget
                    .may_read_ahead(self.budget.chunk(self.remaining))
                {
                    self.start_read();
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Err(e) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// A request body that fails once more than `limit` bytes arrived, and tells the connection's
/// limits how long the server waits for it.
pub struct Limited {
    inner: Incoming,
    left: u64,
    limit: u64,
    conn: Option<Arc<Conn>>,
}

impl Limited {
    pub fn new(inner: Incoming, limit: u64, conn: Option<Arc<Conn>>) -> Limited {
        Limited {
            inner,
            left: limit,
            limit,
            conn,
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.body.settle(c.now());
        }
    }
}

#[derive(Debug)]
pub enum BodyError {
    Transport(hyper::Error),
    TooLarge(u64),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Transport(e) => write!(f, "reading the request body: {e}"),
            BodyError::TooLarge(n) => write!(f, "request body larger than {n} bytes"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Body for Limited {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(c) = &this.conn {
            match &polled {
                Poll::Pending => c.body.wait(c.now()),
                Poll::Ready(Some(Ok(frame))) => c
                    .body
                    .progress(c.now(), frame.data_ref().map_or(0, |d| d.len() as u64)),
                Poll::Ready(_) => c.body.settle(c.now()),
            }
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > this.left {
                        this.left = 0;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Transport(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Collect a (small, limited) body into memory.
pub async fn collect(mut body: Limited) -> Result<Bytes, BodyError> {
    let mut out = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(d) = frame?.into_data() {
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}
