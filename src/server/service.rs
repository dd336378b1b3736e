//! Routing, authentication and the access log for one request.
//!
//! Order of work: health check; one `Authorization` header at most (400 otherwise); path check
//! (400 on escapes); route to the registry or a mount (404 otherwise); authenticate and authorise
//! (anonymous requests also need one of the `max_anonymous_requests` places, 503 otherwise); then
//! the fast paths (registry documents, plain file GETs) and finally dav-server for everything
//! else. Listing a collection (PROPFIND, or GET of a directory) needs a write user: readers and
//! anonymous clients fetch only what they can name, so an unguessable path stays unguessable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dav_server::{DavConfig, DavHandler, DavMethod, DavMethodSet};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::access_log::{AccessLog, Record};
use super::atomic;
use super::auth::{self, Authenticator, Outcome, Principal};
use super::body::{Budget, Limited, ResponseBody};
use super::config::{Role, ServerConfig};
use super::davfs::{blocking, SafeFs};
use super::files::{self, Cache};
use super::limits::Conn;
use super::locks::BoundedLs;
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
    budget: Budget,
    log: Option<Arc<AccessLog>>,
    max_body: u64,
    max_xml_body: u64,
}

enum Denied {
    /// No or wrong credentials: 401 with a challenge.
    Unauthenticated,
    /// Valid credentials without the needed role: 403.
    Forbidden,
    /// Anonymous, and every place for anonymous requests is taken: 503.
    Busy,
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
            let mut methods = methods;
            let mut dav = DavHandler::builder()
                .filesystem(Box::new(SafeFs::new(base.clone())))
                .strip_prefix(m.prefix.clone())
                .autoindex(true);
            if m.locks {
                let max = cfg.max_lock_seconds.get();
                dav = dav.locksystem(BoundedLs::new(max));
            } else {
                methods.remove(DavMethod::Lock);
                methods.remove(DavMethod::Unlock);
            }
            let dav = dav.methods(methods).build_handler();
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
            budget: Budget::new(cfg.download_buffer_bytes),
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
        let conn = req.extensions().get::<Arc<Conn>>().cloned();
        let record = self.log.as_ref().and_then(|l| l.sender()).map(|tx| {
            (
                tx,
                req.method().as_str().to_string(),
                req.uri().path().to_string(),
            )
        });
        let (mut resp, user) = self.dispatch(req, conn.as_ref()).await;
        if let Some(c) = conn {
            resp.body_mut().end_request_of(c);
        }
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
        conn: Option<&Arc<Conn>>,
    ) -> (Response<ResponseBody>, Option<Arc<str>>) {
        let path = req.uri().path();
        if path == "/healthz" {
            return match *req.method() {
                Method::GET | Method::HEAD => (registry::json(StatusCode::OK, registry::OK), None),
                _ => (text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n"), None),
            };
        }
        if req.headers().get_all(header::AUTHORIZATION).iter().count() > 1 {
            // Which one would count is a matter of opinion between servers and proxies: refuse.
            return (
                text(
                    StatusCode::BAD_REQUEST,
                    "more than one Authorization header\n",
                ),
                None,
            );
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
                return self.registry(reg, req, &segs[prefix.len()..], conn).await;
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if segs.starts_with(&m.segs) {
                let rest = segs[m.segs.len()..].to_vec();
                return self.mount(i, req, rest, conn).await;
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
        conn: Option<&Arc<Conn>>,
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
        let authorized = match *req.method() {
            Method::GET | Method::HEAD => self.authorize_settings_read(reg, id, &req, conn).await,
            Method::PUT | Method::DELETE => {
                self.authorize(req.headers(), Role::Write, false, conn)
                    .await
            }
            _ => {
                return (
                    registry::json(StatusCode::NOT_FOUND, registry::NOT_FOUND),
                    None,
                )
            }
        };
        let principal = match authorized {
            Ok(p) => p,
            Err(d) => {
                let mut r = registry::json(d.status(), d.registry_body());
                d.annotate(&mut r, "Basic realm=\"Bosh Registry\"");
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
                let reader = match registry::reader_digest(req.headers()) {
                    Ok(d) => d,
                    Err(()) => {
                        return (
                            registry::json(StatusCode::BAD_REQUEST, registry::BAD_REQUEST),
                            user,
                        )
                    }
                };
                let len = content_length(req.headers());
                let body = Limited::new(req.into_body(), reg.max_bytes, conn.cloned());
                reg.put(id, len, body, reader, &self.cache).await
            }
            _ => reg.delete(id, &self.cache).await,
        };
        (resp, user)
    }

    /// Who may read a VM's settings: the VM itself (user name = the instance id, password = the
    /// secret its config drive holds, checked against the digest the CPI stored), a write user
    /// (the CPI), or anyone with `registry.anonymous_read`. Read users may not: settings hold
    /// credentials, and one reader for every VM would put them all on every node.
    async fn authorize_settings_read(
        self: &Arc<Self>,
        reg: &Registry,
        id: &str,
        req: &Request<Incoming>,
        conn: Option<&Arc<Conn>>,
    ) -> Result<Option<Principal>, Denied> {
        let header = req.headers().get(header::AUTHORIZATION);
        let Some(h) = header else {
            return if reg.anonymous_read {
                take_anonymous_place(conn).map(|()| None)
            } else {
                Err(Denied::Unauthenticated)
            };
        };
        if let Some((user, password)) = auth::parse_basic(h.as_bytes()) {
            if user == id {
                let (dir, id) = (reg.dir.clone(), id.to_string());
                let ok = blocking(move || Registry::agent_may_read(&dir, &id, &password)).await;
                return if ok {
                    Ok(Some(Principal {
                        name: Arc::from(user.as_str()),
                        role: Role::Read,
                    }))
                } else {
                    Err(Denied::Unauthenticated)
                };
            }
        }
        self.authorize(req.headers(), Role::Write, false, conn)
            .await
    }

    async fn mount(
        self: &Arc<Self>,
        index: usize,
        req: Request<Incoming>,
        rest: Vec<String>,
        conn: Option<&Arc<Conn>>,
    ) -> (Response<ResponseBody>, Option<Arc<str>>) {
        let m = &self.mounts[index];
        let method = req.method().clone();
        let read_only = matches!(method.as_str(), "GET" | "HEAD" | "PROPFIND" | "OPTIONS");
        // PROPFIND lists collections: like every write, it needs a write user.
        let (required, anonymous_ok) = if read_only && method.as_str() != "PROPFIND" {
            (Role::Read, m.anonymous_read || m.anonymous_write)
        } else {
            (Role::Write, m.anonymous_write)
        };
        let principal = match self
            .authorize(req.headers(), required, anonymous_ok, conn)
            .await
        {
            Ok(p) => p,
            Err(d) => {
                let mut r = text(d.status(), d.text_body());
                d.annotate(&mut r, "Basic realm=\"ironic_cpi_server\"");
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
                &self.budget,
            ) {
                return (r, user);
            }
            let lister =
                m.anonymous_write || principal.as_ref().is_some_and(|p| p.role >= Role::Write);
            if !lister && path.is_dir() {
                return (
                    text(
                        StatusCode::FORBIDDEN,
                        "listing a collection needs a write user\n",
                    ),
                    user,
                );
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
        let for_body = conn.cloned();
        let req = req.map(|b| Limited::new(b, limit, for_body));
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
        conn: Option<&Arc<Conn>>,
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
            Outcome::Anonymous if anonymous_ok => take_anonymous_place(conn).map(|()| None),
            Outcome::Anonymous | Outcome::Invalid => Err(Denied::Unauthenticated),
            Outcome::Valid(p) if p.role >= required => Ok(Some(p)),
            Outcome::Valid(_) => Err(Denied::Forbidden),
        }
    }
}

/// An anonymous request runs only in one of the `max_anonymous_requests` places.
fn take_anonymous_place(conn: Option<&Arc<Conn>>) -> Result<(), Denied> {
    match conn {
        Some(c) if !c.begin_anonymous() => Err(Denied::Busy),
        _ => Ok(()),
    }
}

impl Denied {
    fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Forbidden => StatusCode::FORBIDDEN,
            Denied::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn text_body(&self) -> &'static str {
        match self {
            Denied::Busy => "too many anonymous requests; try again\n",
            _ => "access denied\n",
        }
    }

    /// The challenge of a 401; a 503 closes the connection, so that a refused anonymous client
    /// does not keep a place open.
    fn annotate(&self, r: &mut Response<ResponseBody>, realm: &'static str) {
        let h = r.headers_mut();
        match self {
            Denied::Unauthenticated => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(realm));
            }
            Denied::Busy => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Denied::Forbidden => {}
        }
    }

    fn registry_body(&self) -> &'static [u8] {
        match self {
            Denied::Busy => registry::BUSY,
            _ => registry::ACCESS_DENIED,
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
