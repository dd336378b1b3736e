//! Accepting connections (plain or TLS), serving HTTP/1.1 on them, and graceful shutdown.
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
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::access_log::AccessLog;
use super::config::{ServerConfig, TlsConfig};
use super::service::App;

/// Seconds a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the server until SIGTERM/SIGINT; the error names what failed at startup.
pub fn run(cfg: ServerConfig) -> Result<(), String> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().thread_name("ironic-cpi-server");
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = rt
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let log = cfg.access_log.then(AccessLog::start);
    let result = rt.block_on(serve(cfg, log.clone()));
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

async fn serve(cfg: ServerConfig, log: Option<Arc<AccessLog>>) -> Result<(), String> {
    let addr = cfg.listen_addr().map_err(|e| e.0)?;
    let tls = match &cfg.tls {
        Some(t) => Some(tls_acceptor(t)?),
        None => None,
    };
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
    let header_timeout = Duration::from_secs_f64(cfg.header_read_timeout_seconds);
    let mut conns = JoinSet::new();

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
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let stop = stop_rx.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        None => serve_conn(stream, remote, app, stop, header_timeout).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => serve_conn(s, remote, app, stop, header_timeout).await,
                                Ok(Err(e)) => log::debug!("TLS handshake with {remote} failed: {e}"),
                                Err(_) => log::debug!("TLS handshake with {remote} timed out"),
                            }
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
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

async fn serve_conn<I>(
    io: I,
    remote: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(req, remote).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
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
