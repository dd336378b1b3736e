//! Accepting connections (plain or TLS), serving HTTP/1.1 on them under the connection limits
//! (`limits`), and graceful shutdown.
//!
//! A new connection costs no HTTP buffers until its first bytes arrive; then hyper serves it,
//! beside a watchdog that ends it when it breaks a limit or is evicted to make room.
//!
//! On SIGTERM or SIGINT the listener closes at once (new connections are refused), idle keep-alive
//! connections are closed, and requests in flight get `shutdown_grace_seconds` to finish; what is
//! still running then is cancelled, which removes the temp files of cut uploads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::access_log::AccessLog;
use super::config::{ServerConfig, TlsConfig};
use super::limits::{Admission, Conn, Ending, Limits, Metered, Tracker};
use super::service::App;
use super::sys;

/// Seconds a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Blocking threads (file reads and writes, fsync, bcrypt): enough for the disk, few enough that
/// thousands of slow downloads cannot multiply threads and their memory.
const MAX_BLOCKING_THREADS: usize = 64;
/// Descriptors kept for files, the listener and the log, beyond two per connection.
const SPARE_DESCRIPTORS: u64 = 64;
/// How often what the limits did is logged (when they did anything).
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// The answer to a connection that arrives when every place is busy.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

/// Run the server until SIGTERM/SIGINT; the error names what failed at startup.
pub fn run(cfg: ServerConfig) -> Result<(), String> {
    sys::tune_allocator();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all()
        .thread_name("ironic-cpi-server")
        .max_blocking_threads(MAX_BLOCKING_THREADS);
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = rt
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let log = cfg.access_log.then(AccessLog::start);
    let result = rt.block_on(serve_all(cfg, log.clone()));
    if let Some(l) = log {
        l.finish();
    }
    // Blocking reads of cancelled downloads must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// What `--check-config` checks beyond the file's shape: that the TLS files load.
pub fn check(cfg: &ServerConfig) -> Result<(), String> {
    if let Some(t) = &cfg.tls {
        tls_acceptor(t)?;
    }
    Ok(())
}

/// Raise the soft descriptor limit to the hard one, and keep `max_connections` within it (each
/// connection may hold a file or an upload's temp file too), so that accept never fails for want
/// of descriptors.
fn descriptor_limits(limits: &mut Limits) {
    let Some(soft) = sys::raise_nofile_limit() else {
        return;
    };
    let fit = (soft.saturating_sub(SPARE_DESCRIPTORS) / 2).max(1) as usize;
    if limits.max_connections > fit {
        log::warn!(
            "max_connections {} lowered to {fit}: the descriptor limit is {} (raise it, e.g. \
             ulimit -n or BPM's open_files)",
            limits.max_connections,
            soft
        );
        limits.max_connections = fit;
        limits.max_anonymous_requests = limits.max_anonymous_requests.min(fit);
    }
    log::info!(
        "limits: {} connections, {} anonymous requests, descriptor limit {}",
        limits.max_connections,
        limits.max_anonymous_requests,
        soft
    );
}

async fn serve_all(cfg: ServerConfig, log: Option<Arc<AccessLog>>) -> Result<(), String> {
    let addr = cfg.listen_addr().map_err(|e| e.0)?;
    let tls = match &cfg.tls {
        Some(t) => Some(tls_acceptor(t)?),
        None => None,
    };
    let mut limits = Limits::from_config(&cfg);
    descriptor_limits(&mut limits);
    let tracker = Tracker::new(limits);
    let app = Arc::new(App::new(&cfg, log)?);
    if cfg.users.is_empty() {
        log::warn!(
            "no users configured: only anonymous access (per mount and registry) is possible"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("key 'listen': cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    log::info!("listening on {scheme}://{local}");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    let mut open_before = 0;

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little instead of spinning.
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let registration = match tracker.admit() {
                    Admission::Admitted(r) => r,
                    Admission::Refused => {
                        // Best effort and never blocking: the socket is new, its buffer empty.
                        let _ = stream.try_write(BUSY);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                set_send_buffer(&stream, tracker.limits.send_buffer_bytes);
                let app = app.clone();
                let stop = stop_rx.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let conn = registration.conn.clone();
                    if !first_bytes(&stream, &conn, remote).await {
                        return;
                    }
                    // Boxed: the task of a silent connection stays a few hundred bytes, instead of
                    // the size of hyper's and rustls' state.
                    Box::pin(serve(stream, remote, app, stop, conn, tls)).await;
                    drop(registration);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = summary.tick() => {
                if let Some(line) = tracker.take_summary() {
                    log::warn!("{line}");
                }
                // After a crowd has gone, give what it used back to the system.
                let open = tracker.open();
                if open + 64 < open_before {
                    sys::release_free_memory();
                }
                open_before = open;
            }
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break; }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs_f64(cfg.shutdown_grace_seconds);
    let in_flight = conns.len();
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => log::info!("shutdown complete ({in_flight} connection(s) finished)"),
        Err(_) => {
            log::warn!(
                "grace period of {}s over: cutting {} connection(s)",
                cfg.shutdown_grace_seconds,
                conns.len()
            );
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }
    Ok(())
}

/// Bound the kernel memory a client that stops reading can make the server hold (autotuning
/// grows a send buffer to megabytes, and a download fills it before it waits for the client).
fn set_send_buffer(stream: &TcpStream, bytes: u64) {
    if bytes == 0 {
        return;
    }
    let size = usize::try_from(bytes).unwrap_or(usize::MAX);
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(size) {
        log::debug!("SO_SNDBUF {size}: {e}");
    }
}

/// Wait until a new connection sends its first bytes (without buffers of any kind), within the
/// header timeout; `false` when it timed out, failed or was evicted meanwhile.
async fn first_bytes(stream: &TcpStream, conn: &Conn, remote: SocketAddr) -> bool {
    let limit = conn.limits().header_timeout;
    // A peek, not `readable()`: that may wake without data, and hyper would then allocate its
    // buffers for a connection that sends nothing.
    let mut probe = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(limit, stream.peek(&mut probe)) => match r {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                log::debug!("connection from {remote}: {e}");
                false
            }
            Err(_) => {
                conn.ended(Ending::HeadTimeout);
                log::debug!("connection from {remote}: {}", Ending::HeadTimeout.describe(conn.limits()));
                false
            }
        },
        _ = conn.evicted() => {
            conn.ended(Ending::Evicted);
            false
        }
    }
}

/// TLS if configured, then HTTP.
async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    conn: Arc<Conn>,
    tls: Option<TlsAcceptor>,
) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let Some(acceptor) = tls else {
        return serve_conn(stream, fd, remote, app, stop, conn).await;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let done = tokio::select! {
        r = handshake => r,
        _ = conn.evicted() => {
            conn.ended(Ending::Evicted);
            return;
        }
    };
    match done {
        Ok(Ok(s)) => serve_conn(s, fd, remote, app, stop, conn).await,
        Ok(Err(e)) => log::debug!("TLS handshake with {remote} failed: {e}"),
        Err(_) => log::debug!("TLS handshake with {remote} timed out"),
    }
}

/// Resolves with the limit the connection broke (checked every `Limits::check_every`).
async fn watchdog(conn: &Conn, fd: std::os::fd::RawFd) -> Ending {
    let every = conn.limits().check_every();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = conn.evicted() => return Ending::Evicted,
        }
        if let Some(why) = conn.check(sys::bytes_acked(fd)) {
            return why;
        }
    }
}

async fn serve_conn<I>(
    io: I,
    fd: std::os::fd::RawFd,
    remote: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    conn: Arc<Conn>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let for_requests = conn.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        for_requests.begin_request();
        req.extensions_mut().insert(for_requests.clone());
        async move { Ok::<_, std::convert::Infallible>(app.handle(req, remote).await) }
    });
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(conn.limits().header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(Metered::new(io, conn.clone())), service);
    tokio::pin!(http);
    let result = tokio::select! {
        r = http.as_mut() => r,
        why = watchdog(&conn, fd) => {
            conn.ended(why);
            log::debug!("connection from {remote}: {}", why.describe(conn.limits()));
            sys::abort_if_stuck(fd, why);
            return;
        }
        _ = stopped(&mut stop) => {
            http.as_mut().graceful_shutdown();
            tokio::select! {
                r = http.as_mut() => r,
                why = watchdog(&conn, fd) => {
                    conn.ended(why);
                    sys::abort_if_stuck(fd, why);
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        log::debug!("connection from {remote}: {e}");
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        let now = *rx.borrow_and_update();
        if now || rx.changed().await.is_err() {
            return;
        }
    }
}

fn tls_acceptor(t: &TlsConfig) -> Result<TlsAcceptor, String> {
    let read = |key: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("key '{key}': cannot read {}: {e}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut read("tls.cert_file", &t.cert_file)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("key 'tls.cert_file': {}: {e}", t.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "key 'tls.cert_file': no certificate in {}",
            t.cert_file.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut read("tls.key_file", &t.key_file)?.as_slice())
        .map_err(|e| format!("key 'tls.key_file': {}: {e}", t.key_file.display()))?
        .ok_or_else(|| {
            format!(
                "key 'tls.key_file': no private key in {}",
                t.key_file.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("keys 'tls.cert_file'/'tls.key_file': {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
