//! The HTTP layer: one `send` path that resolves the endpoint, authenticates, negotiates the
//! microversion, adds the headers, logs, counts and retries transient failures. The resource
//! calls on top of it are thin.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{debug, warn};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::config::{parse_microversion, IronicAuth, IronicConfig};
use ironic_cpi_common::{redact, Secret};
use ironic_cpi_http::{self as http, Policy, Verdict};

use super::body::{self, Body};
use super::error::IronicError;
use super::keystone;
use super::query::{with_query, NodeQuery, PortQuery};
use super::tls;
use super::types::{Node, PatchOp, Port};

const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";

/// Characters left alone in a path segment (node names may contain anything).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where requests go and with which credential, once known (Keystone modes learn both from the
/// token request).
#[derive(Clone)]
struct Session {
    /// Ends in `/`, so that API paths join below it (a proxy's path prefix stays).
    base: Url,
    token: Option<Secret>,
}

/// A blocking Ironic API client for one CPI call: it negotiates once, then pins the microversion.
/// `Sync`, so threads may share it by reference.
pub struct IronicClient {
    http: Client,
    cfg: IronicConfig,
    session: Mutex<Option<Session>>,
    version: Mutex<Option<(u32, u32)>>,
    requests: AtomicU64,
}

/// What a request addresses, for 404 messages ("node 'x' not found").
struct Target<'a> {
    resource: &'a str,
    id: &'a str,
}

const NO_TARGET: Target<'static> = Target {
    resource: "resource",
    id: "",
};

/// How a request is decorated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Normal API call: credentials and the negotiated microversion.
    Api,
    /// `GET /v1` before a microversion is known.
    Discovery,
    /// The Keystone token request itself.
    Keystone,
}

/// One request as sent (and re-sent on retries).
#[derive(Clone, Copy)]
struct Exchange<'a> {
    method: &'a Method,
    url: &'a Url,
    /// For logs and errors: the path below the base URL, never the host or credentials.
    path: &'a str,
    body: Option<&'a Value>,
    mode: Mode,
    token: Option<&'a Secret>,
    version: Option<(u32, u32)>,
    target: &'a Target<'a>,
}

/// A failed exchange, with the server's `Retry-After`, if any.
struct Failed(Box<IronicError>, Option<Duration>);

struct Answer {
    headers: HeaderMap,
    body: String,
}

impl IronicClient {
    /// Build the HTTP client. No network I/O happens here.
    pub fn new(cfg: &IronicConfig) -> Result<IronicClient, IronicError> {
        let config_err = |message: String| IronicError::Config { message };
        let http = http::client(&http::ClientOptions {
            ca_cert_file: cfg.ca_cert_file.as_deref(),
            connect_timeout: cfg.connect_timeout.get(),
            timeout: cfg.request_timeout.get(),
        })
        .map_err(|e| match e {
            http::HttpError::CaFile { .. } => config_err(format!("ironic.{e}")),
            e => config_err(e.to_string()),
        })?;
        for (key, v) in [
            ("min", &cfg.microversion.min),
            ("max", &cfg.microversion.max),
        ] {
            if parse_microversion(v).is_none() {
                return Err(config_err(format!(
                    "ironic.microversion.{key} '{v}' must look like \"1.52\""
                )));
            }
        }
        let base = keystone::normalize_base(&cfg.url);
        if base.is_empty() && keystone::token_request(&cfg.auth).is_none() {
            return Err(config_err(
                "ironic.url is empty and no Keystone auth is configured to find it".into(),
            ));
        }
        let base = match base.as_str() {
            "" => None,
            b => {
                Some(base_url(b).map_err(|e| config_err(format!("ironic.url is not a URL: {e}")))?)
            }
        };
        let session = match (&cfg.auth, base) {
            (
                IronicAuth::KeystonePassword { .. }
                | IronicAuth::KeystoneApplicationCredential { .. },
                _,
            ) => None,
            (IronicAuth::Token { token }, Some(base)) => Some(Session {
                base,
                token: Some(token.clone()),
            }),
            (IronicAuth::None | IronicAuth::HttpBasic { .. }, Some(base)) => {
                Some(Session { base, token: None })
            }
            // Checked above: without Keystone, the URL is configured.
            (_, None) => None,
        };
        Ok(IronicClient {
            http,
            cfg: cfg.clone(),
            session: Mutex::new(session),
            version: Mutex::new(None),
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests actually sent, retries, `GET /v1` and Keystone included.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The configuration this client was built from (waits take their policies from it).
    pub fn config(&self) -> &IronicConfig {
        &self.cfg
    }

    /// The microversion requests go with: the one pinned by an answer or a negotiation, else the
    /// configured maximum, which the first request tries (see [`IronicClient::call`]).
    pub fn microversion_in_use(&self) -> (u32, u32) {
        self.pinned().unwrap_or_else(|| self.wanted_max())
    }

    fn pinned(&self) -> Option<(u32, u32)> {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pin(&self, v: (u32, u32)) {
        let mut guard = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(v);
        }
    }

    /// `ironic.microversion.max`, parsed in `new`.
    fn wanted_max(&self) -> (u32, u32) {
        parse_microversion(&self.cfg.microversion.max).unwrap_or((1, 1))
    }

    /// The microversion in use, negotiated with `GET /v1` when no answer has pinned one yet: the
    /// highest both sides support.
    pub fn microversion(&self) -> Result<(u32, u32), IronicError> {
        let mut guard = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = *guard {
            return Ok(v);
        }
        let v = self.negotiate()?;
        *guard = Some(v);
        Ok(v)
    }

    fn negotiate(&self) -> Result<(u32, u32), IronicError> {
        let ans = self.call(Method::GET, "/v1", None, Mode::Discovery, &NO_TARGET)?;
        let header = |name: &str| {
            ans.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_microversion)
        };
        let body: Value = serde_json::from_str(&ans.body).unwrap_or(Value::Null);
        let from_body = |key: &str| {
            body.pointer(&format!("/version/{key}"))
                .and_then(Value::as_str)
                .and_then(parse_microversion)
        };
        let server_min = header("X-OpenStack-Ironic-API-Minimum-Version")
            .or_else(|| from_body("min_version"))
            .unwrap_or((1, 1));
        let server_max = header("X-OpenStack-Ironic-API-Maximum-Version")
            .or_else(|| from_body("version"))
            .ok_or_else(|| IronicError::Decode {
                what: "GET /v1".into(),
                message: "no maximum API version in the headers or the body".into(),
            })?;
        // Both parsed in `new`.
        let want_min = parse_microversion(&self.cfg.microversion.min).unwrap_or((1, 1));
        let want_max = parse_microversion(&self.cfg.microversion.max).unwrap_or(server_max);
        let chosen = server_max.min(want_max);
        if chosen < want_min || chosen < server_min {
            return Err(IronicError::Microversion {
                url: self.display_base(),
                server_min: fmt_version(server_min),
                server_max: fmt_version(server_max),
                required_min: fmt_version(want_min.max(server_min)),
            });
        }
        debug!(
            "Ironic API microversions {}..{}, using {}",
            fmt_version(server_min),
            fmt_version(server_max),
            fmt_version(chosen)
        );
        Ok(chosen)
    }

    // ---- nodes ----

    /// A node by UUID or name.
    pub fn get_node(&self, id: &str) -> Result<Node, IronicError> {
        self.get_json(&format!("/v1/nodes/{}", seg(id)), &node_target(id))
    }

    /// A node with only `fields` filled in (the others default).
    pub fn get_node_fields(&self, id: &str, fields: &[&str]) -> Result<Node, IronicError> {
        let path = with_query(
            &format!("/v1/nodes/{}", seg(id)),
            &[("fields", fields.join(","))],
        );
        self.get_json(&path, &node_target(id))
    }

    /// The nodes matching `q`, page by page: `each` sees every page as it arrives and may stop
    /// the listing. Only one page is held at a time.
    pub fn node_pages(
        &self,
        q: &NodeQuery,
        each: &mut dyn FnMut(Vec<Node>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        self.pages("/v1/nodes", q.params(), &q.fields, q.limit_total, each)
    }

    /// Every node matching `q`, collected: for filters that match a few nodes, never the pool.
    pub fn list_nodes(&self, q: &NodeQuery) -> Result<Vec<Node>, IronicError> {
        collect(|each| self.node_pages(q, each))
    }

    pub fn create_node(&self, body: &Value) -> Result<Node, IronicError> {
        self.send_json(Method::POST, "/v1/nodes", Some(body), &NO_TARGET)
    }

    /// One JSON Patch; `add` replaces existing members, so one request covers add-or-replace.
    pub fn patch_node(&self, id: &str, ops: &[PatchOp]) -> Result<Node, IronicError> {
        let body = serde_json::to_value(ops).map_err(|e| IronicError::Decode {
            what: "patch".into(),
            message: e.to_string(),
        })?;
        self.send_json(
            Method::PATCH,
            &format!("/v1/nodes/{}", seg(id)),
            Some(&body),
            &node_target(id),
        )
    }

    pub fn delete_node(&self, id: &str) -> Result<(), IronicError> {
        self.send_empty(
            Method::DELETE,
            &format!("/v1/nodes/{}", seg(id)),
            None,
            &node_target(id),
        )
    }

    /// `PUT /v1/nodes/{id}/states/provision` with `target` plus the members of `body_extra`
    /// (`configdrive`, `clean_steps`, `deploy_steps`, ...).
    pub fn set_provision_state(
        &self,
        id: &str,
        target: &str,
        body_extra: Option<Value>,
    ) -> Result<(), IronicError> {
        let mut body = json!({ "target": target });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (body_extra, &mut body) {
            for (k, v) in extra {
                if k != "target" {
                    map.insert(k, v);
                }
            }
        }
        debug!("node {id}: provision action '{target}'");
        self.send_empty(
            Method::PUT,
            &format!("/v1/nodes/{}/states/provision", seg(id)),
            Some(&body),
            &node_target(id),
        )
    }

    /// `power on`, `power off` or `rebooting`.
    pub fn set_power_state(&self, id: &str, target: &str) -> Result<(), IronicError> {
        debug!("node {id}: power action '{target}'");
        self.send_empty(
            Method::PUT,
            &format!("/v1/nodes/{}/states/power", seg(id)),
            Some(&json!({ "target": target })),
            &node_target(id),
        )
    }

    /// Replace the node's traits (needs microversion 1.37).
    pub fn set_node_traits(&self, id: &str, traits: &[String]) -> Result<(), IronicError> {
        self.send_empty(
            Method::PUT,
            &format!("/v1/nodes/{}/traits", seg(id)),
            Some(&json!({ "traits": traits })),
            &node_target(id),
        )
    }

    /// Put the node into maintenance (`Some(reason)`) or take it out (`None`).
    pub fn set_maintenance(&self, id: &str, reason: Option<&str>) -> Result<(), IronicError> {
        let path = format!("/v1/nodes/{}/maintenance", seg(id));
        match reason {
            Some(r) => self.send_empty(
                Method::PUT,
                &path,
                Some(&json!({ "reason": r })),
                &node_target(id),
            ),
            None => self.send_empty(Method::DELETE, &path, None, &node_target(id)),
        }
    }

    /// The driver's interface-by-interface validation (`{"power": {"result": true}, ...}`).
    pub fn validate_node(&self, id: &str) -> Result<Value, IronicError> {
        self.get_json(&format!("/v1/nodes/{}/validate", seg(id)), &node_target(id))
    }

    // ---- ports ----

    /// The ports matching `q`, page by page (see [`IronicClient::node_pages`]).
    pub fn port_pages(
        &self,
        q: &PortQuery,
        each: &mut dyn FnMut(Vec<Port>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        self.pages("/v1/ports", q.params(), &q.fields, None, each)
    }

    /// Every port matching `q`, collected: for filters that match a few ports.
    pub fn list_ports(&self, q: &PortQuery) -> Result<Vec<Port>, IronicError> {
        collect(|each| self.port_pages(q, each))
    }

    pub fn create_port(
        &self,
        node_uuid: &str,
        address: &str,
        extra: Option<Value>,
    ) -> Result<Port, IronicError> {
        let mut body = json!({ "node_uuid": node_uuid, "address": address });
        if let Some(extra) = extra {
            body["extra"] = extra;
        }
        self.send_json(Method::POST, "/v1/ports", Some(&body), &NO_TARGET)
    }

    pub fn delete_port(&self, uuid: &str) -> Result<(), IronicError> {
        self.send_empty(
            Method::DELETE,
            &format!("/v1/ports/{}", seg(uuid)),
            None,
            &Target {
                resource: "port",
                id: uuid,
            },
        )
    }

    // ---- plumbing ----

    /// Follow `next` links until a page comes back without one (or empty: Ironic links every full
    /// page, so the last one may be empty), handing each page to `each`. A `next` link that
    /// repeats a marker would read the same pages forever: that is an error.
    fn pages<T: DeserializeOwned>(
        &self,
        path: &str,
        mut params: Vec<(&'static str, String)>,
        fields: &[String],
        limit_total: Option<usize>,
        each: &mut dyn FnMut(Vec<T>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        let page_size = self.cfg.page_size.max(1) as usize;
        let first_limit = limit_total.map_or(page_size, |t| t.clamp(1, page_size));
        params.push(("limit", first_limit.to_string()));
        if !fields.is_empty() {
            // `detail=true` together with `fields=` is a 400.
            params.push(("fields", fields.join(",")));
        } else {
            params.push(("detail", "true".into()));
        }
        let mut next = Some(with_query(path, &params));
        let mut markers: HashSet<String> = HashSet::new();
        let mut delivered = 0usize;
        while let Some(page_path) = next.take() {
            let page: Page<T> = self.get_json(&page_path, &NO_TARGET)?;
            let Some(mut items) = page.items else {
                return Err(IronicError::Decode {
                    what: format!("GET {path}"),
                    message: "the answer holds no list".into(),
                });
            };
            if items.is_empty() {
                break;
            }
            if let Some(t) = limit_total {
                items.truncate(t.saturating_sub(delivered));
            }
            delivered += items.len();
            if each(items).is_break() || limit_total.is_some_and(|t| delivered >= t) {
                break;
            }
            let Some((following, marker)) = page
                .next
                .as_deref()
                .and_then(|link| next_page(path, &params, link))
            else {
                break;
            };
            if !markers.insert(marker.clone()) {
                return Err(IronicError::Decode {
                    what: format!("GET {path}"),
                    message: format!(
                        "after {} pages, the `next` link repeats marker '{marker}': the \
                         listing does not advance, and following it would read the same pages \
                         forever",
                        markers.len() + 1
                    ),
                });
            }
            next = Some(following);
        }
        Ok(())
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str, target: &Target) -> Result<T, IronicError> {
        let ans = self.call(Method::GET, path, None, Mode::Api, target)?;
        decode(&Method::GET, path, &ans.body)
    }

    fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        target: &Target,
    ) -> Result<T, IronicError> {
        let ans = self.call(method.clone(), path, body, Mode::Api, target)?;
        decode(&method, path, &ans.body)
    }

    fn send_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        target: &Target,
    ) -> Result<(), IronicError> {
        self.call(method, path, body, Mode::Api, target).map(|_| ())
    }

    /// One API call: session, microversion, retries, and one re-authentication when a Keystone
    /// token was refused (it may have expired or been revoked).
    ///
    /// Before any answer has pinned a microversion, a request goes with the configured maximum
    /// instead of asking `GET /v1` first: Ironic checks the version before anything else, so a
    /// 406 means nothing happened, and only then does the client negotiate and send again. An
    /// Ironic that serves the configured maximum (1.115: Ironic 39) costs no extra request.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        mode: Mode,
        target: &Target,
    ) -> Result<Answer, IronicError> {
        let mut reauthenticated = false;
        let mut negotiated = false;
        loop {
            let session = self.session()?;
            let (version, tentative) = match mode {
                Mode::Api => match self.pinned() {
                    Some(v) => (Some(v), false),
                    None => (Some(self.wanted_max()), true),
                },
                _ => (None, false),
            };
            let url = session
                .base
                .join(path.trim_start_matches('/'))
                .map_err(|e| IronicError::Config {
                    message: format!("{path} does not join {}: {e}", shown(&session.base)),
                })?;
            let exchange = Exchange {
                method: &method,
                url: &url,
                path,
                body,
                mode,
                token: session.token.as_ref(),
                version,
                target,
            };
            let result = self.send_with_retries(&exchange);
            // 401 is a token Ironic no longer accepts; 403 is a policy refusal a new token of
            // the same user would meet again.
            match result {
                Err(IronicError::Unauthorized { status: 401, .. })
                    if !reauthenticated && keystone::token_request(&self.cfg.auth).is_some() =>
                {
                    debug!("{method} {path}: the Keystone token was refused; authenticating again");
                    reauthenticated = true;
                    *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(e @ IronicError::NotAcceptable { .. }) if tentative && !negotiated => {
                    negotiated = true;
                    let chosen = self.microversion()?;
                    if Some(chosen) == version {
                        // The version was fine: the 406 is about the request itself.
                        return Err(e);
                    }
                    debug!(
                        "{method} {path}: Ironic refused microversion {}; sending again with {}",
                        version.map(fmt_version).unwrap_or_default(),
                        fmt_version(chosen)
                    );
                }
                Ok(answer) => {
                    if let (true, Some(v)) = (tentative, version) {
                        self.pin(v);
                    }
                    return Ok(answer);
                }
                other => return other,
            }
        }
    }

    fn session(&self) -> Result<Session, IronicError> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = self.authenticate()?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Keystone v3: a token from `X-Subject-Token`, and the endpoint from the catalog when
    /// `ironic.url` is empty.
    fn authenticate(&self) -> Result<Session, IronicError> {
        let Some((url, body, region)) = keystone::token_request(&self.cfg.auth) else {
            return Err(IronicError::Config {
                message: "no Keystone auth configured".into(),
            });
        };
        let url = Url::parse(&url).map_err(|e| IronicError::Config {
            message: format!(
                "the Keystone auth_url {} is not a URL: {e}",
                redact::url_text(&url)
            ),
        })?;
        let exchange = Exchange {
            method: &Method::POST,
            url: &url,
            path: "/v3/auth/tokens",
            body: Some(&body),
            mode: Mode::Keystone,
            token: None,
            version: None,
            target: &NO_TARGET,
        };
        // Keystone answers 401 to a wrong secret, an unknown user or project alike, and says no
        // more: name everything the operator may have got wrong, and never the secret.
        let refused = |status: u16, message: String| IronicError::Auth {
            message: format!(
                "Keystone at {} refused {} (HTTP {status}: {message})",
                shown(&url),
                keystone::identity(&self.cfg.auth)
            ),
        };
        let ans = self.send_with_retries(&exchange).map_err(|e| match e {
            IronicError::Unauthorized { status, message } => refused(status, message),
            IronicError::NotFound { message, .. } => refused(404, message),
            IronicError::BadRequest { message } => refused(400, message),
            other => other,
        })?;
        let token = ans
            .headers
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| IronicError::Auth {
                message: "Keystone answered without an X-Subject-Token header".into(),
            })?;
        let base = keystone::normalize_base(&self.cfg.url);
        let base = if base.is_empty() {
            let doc: Value = serde_json::from_str(&ans.body).map_err(|e| IronicError::Auth {
                message: format!("the Keystone token body is not JSON: {e}"),
            })?;
            keystone::baremetal_endpoint(&doc, region.as_deref())?
        } else {
            base
        };
        let base = base_url(&base).map_err(|e| IronicError::Auth {
            message: format!(
                "the baremetal endpoint {} is not a URL: {e}",
                redact::url_text(&base)
            ),
        })?;
        Ok(Session {
            base,
            token: Some(Secret::new(token)),
        })
    }

    /// One exchange under the retry policy: transient failures (409 NodeLocked, 503,
    /// connection failures) are repeated after the server's `Retry-After` if it gave one, but
    /// a request that may have reached Ironic only if repeating it is harmless.
    fn send_with_retries(&self, x: &Exchange) -> Result<Answer, IronicError> {
        let p = &self.cfg.retry;
        let policy = Policy::retries(p.initial_delay.get(), p.max_delay.get(), p.max_attempts);
        let idempotent = matches!(*x.method, Method::GET | Method::HEAD | Method::DELETE);
        let judge = |Failed(err, retry_after): &Failed| {
            let retryable = match &**err {
                IronicError::Transport { not_sent, .. } => *not_sent || idempotent,
                e => e.is_transient(),
            };
            if retryable {
                Verdict::Retry(*retry_after)
            } else {
                Verdict::Stop
            }
        };
        let attempts = std::cell::Cell::new(0u32);
        let started = Instant::now();
        let result = http::retry::run(
            &policy,
            || {
                attempts.set(attempts.get() + 1);
                self.send_once(x)
            },
            judge,
            |Failed(err, _), delay| {
                warn!(
                    "{} {}: {err}; retrying in {:.2} s (attempt {})",
                    x.method,
                    x.path,
                    delay.as_secs_f64(),
                    attempts.get() + 1
                )
            },
        );
        result.map_err(|failed| {
            let exhausted = judge(&failed) != Verdict::Stop;
            let Failed(err, _) = failed;
            if exhausted {
                gave_up(*err, attempts.get(), started.elapsed())
            } else {
                *err
            }
        })
    }

    /// One HTTP exchange. Errors come with the server's `Retry-After`, if any.
    fn send_once(&self, x: &Exchange) -> Result<Answer, Failed> {
        let Exchange {
            method,
            url,
            path,
            body,
            mode,
            token,
            version,
            target,
        } = *x;
        let mut req = self.http.request(method.clone(), url.clone());
        if let Some(v) = version {
            req = req.header(VERSION_HEADER, fmt_version(v));
        }
        if mode != Mode::Keystone {
            match &self.cfg.auth {
                IronicAuth::HttpBasic { username, password } => {
                    req = req.basic_auth(username, Some(password.expose()));
                }
                _ => {
                    if let Some(token) = token {
                        if let Ok(mut value) = HeaderValue::from_str(token.expose()) {
                            value.set_sensitive(true);
                            req = req.header("X-Auth-Token", value);
                        }
                    }
                }
            }
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = req.send();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let service = match mode {
            Mode::Keystone => "Keystone",
            Mode::Api | Mode::Discovery => "Ironic",
        };
        let resp: Response = match result {
            Ok(r) => r,
            Err(e) => {
                debug!("{method} {path} -> transport error after {ms:.0} ms");
                let host = url.host_str().unwrap_or_default();
                if let Some(message) = tls::failure(&e, host) {
                    return Err(Failed(
                        Box::new(IronicError::Tls {
                            service,
                            url: shown(url),
                            message,
                        }),
                        None,
                    ));
                }
                return Err(Failed(
                    Box::new(IronicError::Transport {
                        service,
                        method: method.to_string(),
                        url: shown(url),
                        message: error_chain(&e),
                        not_sent: e.is_connect(),
                    }),
                    None,
                ));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let success = (200..300).contains(&status);
        let cap = self.cfg.max_response_bytes;
        let declared = resp.content_length();
        let read = if success {
            body::read_capped(resp, declared, cap)
        } else {
            body::read_head(resp, body::ERROR_BODY_BYTES.min(cap)).map(Body::Whole)
        };
        let text = match read {
            Ok(Body::Whole(bytes)) => String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            Ok(Body::Over { declared }) => {
                debug!("{method} {path} -> {status}, answer over {cap} bytes");
                return Err(Failed(
                    Box::new(IronicError::ResponseTooLarge {
                        method: method.to_string(),
                        url: shown(url),
                        cap,
                        declared,
                        applied: !matches!(*method, Method::GET | Method::HEAD),
                    }),
                    None,
                ));
            }
            Err(e) => {
                return Err(Failed(
                    Box::new(IronicError::Transport {
                        service,
                        method: method.to_string(),
                        url: shown(url),
                        message: format!("reading the answer: {}", io_chain(&e)),
                        not_sent: false,
                    }),
                    None,
                ))
            }
        };
        debug!(
            "{method} {path} -> {status} in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        if success {
            return Ok(Answer {
                headers,
                body: text,
            });
        }
        let retry_after = http::retry_after(&headers);
        let short_path = path.split('?').next().unwrap_or(path);
        Err(Failed(
            Box::new(IronicError::from_status(
                method.as_str(),
                short_path,
                status,
                &text,
                target.resource,
                target.id,
            )),
            retry_after,
        ))
    }

    fn display_base(&self) -> String {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match session.as_ref() {
            Some(s) => shown(&s.base),
            None => redact::url_text(&self.cfg.url),
        }
    }
}

/// Say how hard we tried, so that an operator can tell a blip from an outage.
fn gave_up(mut err: IronicError, attempts: u32, elapsed: Duration) -> IronicError {
    if attempts > 1 {
        if let IronicError::ServiceUnavailable { message }
        | IronicError::Conflict { message, .. }
        | IronicError::Transport { message, .. } = &mut err
        {
            message.push_str(&format!(
                " (gave up after {attempts} attempts in {:.1} s)",
                elapsed.as_secs_f64()
            ));
        }
    }
    err
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, body: &str) -> Result<T, IronicError> {
    serde_json::from_str(body).map_err(|e| IronicError::Decode {
        what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
        message: e.to_string(),
    })
}

fn node_target(id: &str) -> Target<'_> {
    Target {
        resource: "node",
        id,
    }
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub(crate) fn fmt_version((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

/// The request for the page after a `next` link, and the link's marker.
///
/// Ironic 39's `next` links keep `marker`, `limit`, `fields` and the sort, but drop the filters
/// (`provision_state`, `resource_class`, `node`, `address`, ...): followed verbatim, page two
/// lists everything. So the link's parameters are laid over this list's own, and its host (which
/// is whatever Ironic thinks it is called, maybe not how we reach it) is ignored.
fn next_page(path: &str, ours: &[(&'static str, String)], link: &str) -> Option<(String, String)> {
    let query = link.split_once('?').map(|(_, q)| q)?;
    let theirs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let marker = theirs.iter().find(|(k, _)| k == "marker")?.1.clone();
    let mut params: Vec<(&str, String)> = ours
        .iter()
        .filter(|(k, _)| !theirs.iter().any(|(t, _)| t == k))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    params.extend(theirs.iter().map(|(k, v)| (k.as_str(), v.clone())));
    Some((with_query(path, &params), marker))
}

/// One page of a list: `{"nodes": [...], "next": "..."}` or `{"ports": [...], ...}`.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(alias = "nodes", alias = "ports")]
    items: Option<Vec<T>>,
    next: Option<String>,
}

/// Every item of a paged listing, collected.
fn collect<T>(
    list: impl FnOnce(&mut dyn FnMut(Vec<T>) -> ControlFlow<()>) -> Result<(), IronicError>,
) -> Result<Vec<T>, IronicError> {
    let mut out = Vec::new();
    list(&mut |page| {
        out.extend(page);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// The base URL of the API: `base` (without `/v1`) ending in `/`, so that paths join below it.
fn base_url(base: &str) -> Result<Url, url::ParseError> {
    let mut u = Url::parse(base)?;
    if !u.path().ends_with('/') {
        let path = format!("{}/", u.path());
        u.set_path(&path);
    }
    Ok(u)
}

/// A URL for messages: no credentials, no query (filters and markers only make it long).
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    redact::url(&u)
}

/// An I/O error while reading an answer, with its causes (reqwest's among them), without URLs.
fn io_chain(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<reqwest::Error>()) {
        return error_chain(inner);
    }
    http::chain(vec![e.to_string()], std::error::Error::source(e))
}

/// reqwest's message plus its causes ("connection failed: ...: Connection refused"), without
/// the URL it would print.
fn error_chain(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out: "
    } else if e.is_connect() {
        "connection failed: "
    } else {
        ""
    };
    format!("{kind}{}", http::describe(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_keep_our_filters() {
        let ours = vec![
            ("resource_class", "gold".to_string()),
            ("limit", "2".to_string()),
            ("fields", "uuid".to_string()),
        ];
        let link =
            "http://other-host/v1/nodes?sort_key=id&sort_dir=asc&fields=uuid&limit=2&marker=abc";
        assert_eq!(
            next_page("/v1/nodes", &ours, link),
            Some((
                "/v1/nodes?resource_class=gold&sort_key=id&sort_dir=asc&fields=uuid&limit=2&marker=abc"
                    .to_string(),
                "abc".to_string()
            ))
        );
        assert_eq!(next_page("/v1/nodes", &ours, "garbage"), None);
        assert_eq!(
            next_page("/v1/nodes", &ours, "http://h/v1/nodes?limit=2"),
            None
        );
    }

    fn cfg(url: &str) -> IronicConfig {
        serde_json::from_value(json!({ "url": url })).unwrap()
    }

    #[test]
    fn new_checks_its_configuration_without_network() {
        let c = IronicClient::new(&cfg("http://127.0.0.1:1/v1/")).unwrap();
        assert_eq!(c.request_count(), 0);
        let e = IronicClient::new(&cfg("")).err().unwrap();
        assert!(e.to_string().contains("ironic.url is empty"), "{e}");

        let mut bad_ca = cfg("https://h:6385");
        bad_ca.ca_cert_file = Some("/nonexistent/ca.pem".into());
        let e = IronicClient::new(&bad_ca).err().unwrap();
        assert!(matches!(e, IronicError::Config { .. }) && e.to_string().contains("ca.pem"));

        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        bad_ca.ca_cert_file = Some(not_pem.display().to_string());
        assert!(IronicClient::new(&bad_ca).is_err());

        let mut bad_version = cfg("http://h:6385");
        bad_version.microversion.max = "latest".into();
        assert!(IronicClient::new(&bad_version).is_err());
    }

    #[test]
    fn urls_lose_userinfo_and_query() {
        let u = Url::parse("http://admin:hunter2@h:6385/v1/nodes?x=1").unwrap();
        assert_eq!(shown(&u), "http://h:6385/v1/nodes");
    }

    #[test]
    fn paths_join_below_the_base() {
        let base = base_url("https://h/baremetal").unwrap();
        assert_eq!(
            base.join("v1/nodes/a%20b?fields=uuid").unwrap().as_str(),
            "https://h/baremetal/v1/nodes/a%20b?fields=uuid"
        );
        let base = base_url("http://h:6385").unwrap();
        assert_eq!(base.join("v1").unwrap().as_str(), "http://h:6385/v1");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("node 1/a"), "node%201%2Fa");
        assert_eq!(seg("abc-DEF_1.2"), "abc-DEF_1.2");
    }
}
