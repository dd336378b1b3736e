//! Request and response bodies.
//!
//! Responses are one small enum instead of a boxed trait object: the fast paths (registry, small
//! files) hand out a `Bytes` that is already in memory, and large files stream from disk in
//! bounded chunks with one chunk read ahead, so memory stays flat whatever the file size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::task::JoinHandle;

use super::access_log::Record;

/// Bytes read from disk per step when streaming a file.
const READ_CHUNK: usize = 256 * 1024;

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
        }
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

/// A byte range of an open file, read in chunks on the blocking pool.
pub struct FileStream {
    file: Option<File>,
    offset: u64,
    remaining: u64,
    pending: Option<JoinHandle<(File, io::Result<Bytes>)>>,
    pending_len: u64,
}

impl FileStream {
    pub fn new(file: File, offset: u64, len: u64) -> FileStream {
        FileStream {
            file: Some(file),
            offset,
            remaining: len,
            pending: None,
            pending_len: 0,
        }
    }

    fn start_read(&mut self) {
        if self.remaining == 0 || self.pending.is_some() {
            return;
        }
        let Some(file) = self.file.take() else {
            return;
        };
        let n = (self.remaining as usize).min(READ_CHUNK);
        let offset = self.offset;
        self.offset += n as u64;
        self.remaining -= n as u64;
        self.pending_len = n as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(n);
            let r = file.read_exact_at(&mut buf, offset).map(|_| buf.freeze());
            (file, r)
        }));
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        self.start_read();
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let joined = ready!(Pin::new(pending).poll(cx));
        self.pending = None;
        self.pending_len = 0;
        match joined {
            Ok((file, Ok(bytes))) => {
                self.file = Some(file);
                // Read the next chunk while hyper writes this one.
                self.start_read();
                Poll::Ready(Some(Ok(bytes)))
            }
            Ok((_, Err(e))) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(e)))
            }
            Err(e) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
        }
    }
}

use std::future::Future;

/// A request body that fails once more than `limit` bytes arrived.
pub struct Limited {
    inner: Incoming,
    left: u64,
    limit: u64,
}

impl Limited {
    pub fn new(inner: Incoming, limit: u64) -> Limited {
        Limited {
            inner,
            left: limit,
            limit,
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
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
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
