//! Routing, authentication and the access log for one request.
//!
//! Order of work: health check; path check (400 on escapes); route to the registry or a mount
//! (404 otherwise); authenticate and authorise; then the fast paths (registry documents, plain
//! file GETs) and finally dav-server for everything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dav_server::memls::MemLs;
use dav_server::{DavConfig, DavHandler, DavMethod, DavMethodSet};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::access_log::{AccessLog, Record};
use super::atomic;
use super::auth::{Authenticator, Outcome, Principal};
use super::body::{Limited, ResponseBody};
use super::config::{Role, ServerConfig};
use super::davfs::SafeFs;
use super::files::{self, Cache};
use super::paths::{self, PathError};
use super::registry::{self, Registry, Route};

struct Mount {
    segs: Vec<String>,
    base: PathBuf,
    dav: DavHandler,
    anonymous_read: bool,
    anonymous_write: bool,
}

pub struct App {
    mounts: Vec<Mount>,
    registry: Option<(Vec<String>, Registry)>,
    auth: Authenticator,
    cache: Cache,
    log: Option<Arc<AccessLog>>,
    max_body: u64,
    max_xml_body: u64,
}

enum Denied {
    /// No or wrong credentials: 401 with a challenge.
    Unauthenticated,
    /// Valid credentials without the needed role: 403.
    Forbidden,
}

impl App {
    /// Create the directories, remove a previous run's leftover temp files, build the handlers.
    pub fn new(cfg: &ServerConfig, log: Option<Arc<AccessLog>>) -> Result<App, String> {
        std::fs::create_dir_all(&cfg.root)
            .map_err(|e| format!("key 'root': cannot create {}: {e}", cfg.root.display()))?;
        let root = cfg
            .root
            .canonicalize()
            .map_err(|e| format!("key 'root': {}: {e}", cfg.root.display()))?;
        let removed = atomic::remove_leftovers(&root)
            .map_err(|e| format!("cannot clean temp files under {}: {e}", root.display()))?;
        if removed > 0 {
            log::warn!("removed {removed} unfinished upload(s) left by a previous run");
        }
        let prepare = |key: &str, dir: &str| -> Result<PathBuf, String> {
            let p = root.join(dir);
            std::fs::create_dir_all(&p)
                .map_err(|e| format!("key '{key}': cannot create {}: {e}", p.display()))?;
            let canon = p
                .canonicalize()
                .map_err(|e| format!("key '{key}': {}: {e}", p.display()))?;
            Ok(canon)
        };
        let mut methods = DavMethodSet::all();
        // SabreDAV partial updates write in place: they cannot be atomic.
        methods.remove(DavMethod::Patch);
        let mut mounts = Vec::new();
        for (i, m) in cfg.mounts.iter().enumerate() {
            let base = prepare(&format!("mounts[{i}].dir"), &m.dir)?;
            let dav = DavHandler::builder()
                .filesystem(Box::new(SafeFs::new(base.clone())))
                .locksystem(MemLs::new())
                .strip_prefix(m.prefix.clone())
                .methods(methods)
                .autoindex(true)
                .build_handler();
            mounts.push(Mount {
                segs: split_prefix(&m.prefix),
                base,
                dav,
                anonymous_read: m.anonymous_read,
                anonymous_write: m.anonymous_write,
            });
        }
        let registry = if cfg.registry.enabled {
            let dir = prepare("registry.dir", &cfg.registry.dir)?;
            Some((
                split_prefix(&cfg.registry.prefix),
                Registry {
                    dir,
                    anonymous_read: cfg.registry.anonymous_read,
                    max_bytes: cfg.registry.max_settings_bytes,
                },
            ))
        } else {
            None
        };
        Ok(App {
            mounts,
            registry,
            auth: Authenticator::new(&cfg.users),
            cache: Cache::new(cfg.cache_file_max_bytes, cfg.cache_total_bytes),
            log,
            max_body: cfg.max_body_bytes,
            max_xml_body: cfg.max_xml_body_bytes,
        })
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let record = self.log.as_ref().and_then(|l| l.sender()).map(|tx| {
            (
                tx,
                req.method().as_str().to_string(),
                req.uri().path().to_string(),
            )
        });
        let (mut resp, user) = self.dispatch(req).await;
        if let Some((tx, method, path)) = record {
            let status = resp.status().as_u16();
            let expected = if method == "HEAD" {
                Some(0)
            } else {
                content_length(resp.headers())
            };
            resp.body_mut().log_with(
                Record {
                    tx,
                    start,
                    remote,
                    user,
                    method,
                    path,
                    status,
                },
                expected,
            );
        }
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> (Response<ResponseBody>, Option<Arc<str>>) {
        let path = req.uri().path();
        if path == "/healthz" {
            return match *req.method() {
                Method::GET | Method::HEAD => (registry::json(StatusCode::OK, registry::OK), None),
                _ => (text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n"), None),
            };
        }
        let segs = match paths::segments(path) {
            Ok(s) => s,
            Err(PathError::Invalid) => {
                return (text(StatusCode::BAD_REQUEST, "invalid path\n"), None);
            }
            Err(PathError::Reserved) => {
                return (
                    registry::json(StatusCode::NOT_FOUND, registry::NOT_FOUND),
                    None,
                );
            }
        };
        if let Some((prefix, reg)) = &self.registry {
            if segs.starts_with(prefix) {
                return self.registry(reg, req, &segs[prefix.len()..]).await;
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if segs.starts_with(&m.segs) {
                let rest = segs[m.segs.len()..].to_vec();
                return self.mount(i, req, rest).await;
            }
        }
        (
            registry::json(StatusCode::NOT_FOUND, registry::NOT_FOUND),
            None,
        )
    }

    async fn registry(
        self: &Arc<Self>,
        reg: &Registry,
        req: Request<Incoming>,
        rest: &[String],
    ) -> (Response<ResponseBody>, Option<Arc<str>>) {
        let id = match registry::route(rest) {
            Route::Settings(id) => id,
            Route::BadId => {
                return (
                    registry::json(StatusCode::BAD_REQUEST, registry::BAD_REQUEST),
                    None,
                )
            }
            Route::NotFound => {
                return (
                    registry::json(StatusCode::NOT_FOUND, registry::NOT_FOUND),
                    None,
                )
            }
        };
        let (required, anonymous_ok) = match *req.method() {
            Method::GET | Method::HEAD => (Role::Read, reg.anonymous_read),
            Method::PUT | Method::DELETE => (Role::Write, false),
            _ => {
                return (
                    registry::json(StatusCode::NOT_FOUND, registry::NOT_FOUND),
                    None,
                )
            }
        };
        let principal = match self.authorize(req.headers(), required, anonymous_ok).await {
            Ok(p) => p,
            Err(d) => {
                let mut r = registry::json(d.status(), registry::ACCESS_DENIED);
                if matches!(d, Denied::Unauthenticated) {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"Bosh Registry\""),
                    );
                }
                return (r, None);
            }
        };
        let user = principal.map(|p| p.name);
        let resp = match *req.method() {
            Method::GET => reg.get(id, &self.cache),
            Method::HEAD => {
                let r = reg.get(id, &self.cache);
                let (parts, _) = r.into_parts();
                Response::from_parts(parts, ResponseBody::empty())
            }
            Method::PUT => {
                let len = content_length(req.headers());
                let body = Limited::new(req.into_body(), reg.max_bytes);
                reg.put(id, len, body, &self.cache).await
            }
            _ => reg.delete(id, &self.cache).await,
        };
        (resp, user)
    }

    async fn mount(
        self: &Arc<Self>,
        index: usize,
        req: Request<Incoming>,
        rest: Vec<String>,
    ) -> (Response<ResponseBody>, Option<Arc<str>>) {
        let m = &self.mounts[index];
        let method = req.method().clone();
        let read_only = matches!(method.as_str(), "GET" | "HEAD" | "PROPFIND" | "OPTIONS");
        let (required, anonymous_ok) = if read_only {
            (Role::Read, m.anonymous_read || m.anonymous_write)
        } else {
            (Role::Write, m.anonymous_write)
        };
        let principal = match self.authorize(req.headers(), required, anonymous_ok).await {
            Ok(p) => p,
            Err(d) => {
                let mut r = text(d.status(), "access denied\n");
                if matches!(d, Denied::Unauthenticated) {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"ironic_cpi_server\""),
                    );
                }
                return (r, None);
            }
        };
        let user = principal.as_ref().map(|p| p.name.clone());

        if method == Method::GET || method == Method::HEAD {
            let path = paths::join(&m.base, &rest);
            if let Some(r) = files::serve(
                req.headers(),
                method == Method::HEAD,
                &path,
                &m.base,
                &self.cache,
            ) {
                return (r, user);
            }
        }

        let limit = if method == Method::PUT {
            if req.headers().contains_key(header::CONTENT_RANGE) {
                // As nginx: a partial PUT cannot be applied atomically.
                return (
                    text(
                        StatusCode::NOT_IMPLEMENTED,
                        "PUT with Content-Range is not supported\n",
                    ),
                    user,
                );
            }
            self.max_body
        } else {
            self.max_xml_body
        };
        if content_length(req.headers()).is_some_and(|n| n > limit) {
            return (
                text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
                user,
            );
        }
        if method.as_str() == "COPY" || method.as_str() == "MOVE" {
            if let Err(r) = check_destination(req.headers(), &m.segs) {
                return (*r, user);
            }
        }
        let req = req.map(|b| Limited::new(b, limit));
        let resp = match &principal {
            Some(p) => {
                let cfg = DavConfig::new().principal(p.name.to_string());
                m.dav.handle_with(cfg, req).await
            }
            None => m.dav.handle(req).await,
        };
        if !read_only {
            self.cache.invalidate_under(&m.base);
        }
        (resp.map(ResponseBody::dav), user)
    }

    async fn authorize(
        self: &Arc<Self>,
        headers: &HeaderMap,
        required: Role,
        anonymous_ok: bool,
    ) -> Result<Option<Principal>, Denied> {
        let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let outcome = match self.auth.cached(header) {
            Some(o) => o,
            None => {
                let app = Arc::clone(self);
                let h = header.map(<[u8]>::to_vec).unwrap_or_default();
                // bcrypt takes tens of milliseconds: keep it off the async workers.
                tokio::task::spawn_blocking(move || app.auth.verify(&h))
                    .await
                    .unwrap_or(Outcome::Invalid)
            }
        };
        match outcome {
            Outcome::Anonymous if anonymous_ok => Ok(None),
            Outcome::Anonymous | Outcome::Invalid => Err(Denied::Unauthenticated),
            Outcome::Valid(p) if p.role >= required => Ok(Some(p)),
            Outcome::Valid(_) => Err(Denied::Forbidden),
        }
    }
}

impl Denied {
    fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Forbidden => StatusCode::FORBIDDEN,
        }
    }
}

fn split_prefix(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// COPY and MOVE stay inside the mount, and their destination passes the same path checks as the
/// request path (dav-server would otherwise normalise `..` in it).
fn check_destination(h: &HeaderMap, mount: &[String]) -> Result<(), Box<Response<ResponseBody>>> {
    let Some(dest) = h.get("destination").and_then(|v| v.to_str().ok()) else {
        return Ok(()); // dav-server answers the missing header
    };
    let path = match dest.find("://") {
        Some(i) => {
            let after = &dest[i + 3..];
            match after.find('/') {
                Some(j) => &after[j..],
                None => "/",
            }
        }
        None => dest,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    match paths::segments(path) {
        Ok(segs) if segs.starts_with(mount) => Ok(()),
        Ok(_) => Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "destination is outside this collection tree\n",
        ))),
        Err(_) => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "invalid destination\n",
        ))),
    }
}

fn text(status: StatusCode, msg: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
