//! The CPI's WebDAV client: stemcell images and config drives on the companion server or nginx.
//!
//! Paths are relative to the configured collection URL (`stemcells/<uuid>/image`), `/`-separated;
//! each segment is percent-encoded, and `.`/`..` segments are refused. Parent collections are
//! created with MKCOL before uploads and moves (dav-server answers 409 for a missing parent; nginx
//! creates them only with `create_full_put_path`), and remembered so that each is made once.
//!
//! Credentials go in an `Authorization` header only: URLs in messages and in `url()` never carry
//! them. A `user:password@` in the configured URL is taken out and used as basic auth.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Mutex;

use ironic_cpi_common::redact;
use ironic_cpi_http::{self as http, Policy, Request};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::config::{RepositoryConfig, Secret};
use crate::error::{CpiError, Result};

pub struct Repository {
    /// The configured collection, without credentials or a trailing `/`.
    base: Url,
    public_base: Url,
    auth: Option<(String, Secret)>,
    client: Client,
    /// Collections known to exist (relative paths with a trailing `/`).
    collections: Mutex<HashSet<String>>,
}

impl Repository {
    pub fn new(cfg: &RepositoryConfig) -> Result<Repository> {
        let (base, embedded) = redact::split_credentials(cfg.url.trim());
        let auth = match (&cfg.username, &cfg.password, embedded) {
            (Some(u), p, _) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, _, Some((u, p))) => Some((u, Secret::new(p))),
            (None, _, None) => None,
        };
        let base = collection("url", &base)?;
        let public_base = match &cfg.public_url {
            Some(p) => collection("public_url", p.trim())?,
            None => base.clone(),
        };
        let client = http::client(&http::ClientOptions {
            ca_cert_file: cfg.ca_cert_file.as_deref(),
            connect_timeout: http::CONNECT_TIMEOUT,
            timeout: cfg.timeout.get(),
        })
        .map_err(|e| CpiError::cpi(format!("repository {base}: {e}")))?;
        Ok(Repository {
            base,
            public_base,
            auth,
            client,
            collections: Mutex::new(HashSet::new()),
        })
    }

    /// The URL the CPI uses for `path` (no credentials in it).
    pub fn url(&self, path: &str) -> String {
        join(&self.base, path).into()
    }

    /// The URL Ironic downloads `path` from: `public_url` if configured, else `url`.
    pub fn public_url(&self, path: &str) -> String {
        join(&self.public_base, path).into()
    }

    pub fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        check_path(path)?;
        self.ensure_parents(path)?;
        let url = join(&self.base, path);
        let doing = format!("uploading {} bytes", bytes.len());
        let req = request("PUT", &url, &doing, true);
        // Bytes: each attempt shares the buffer instead of copying it.
        let bytes = bytes::Bytes::from(bytes);
        let resp = http::send(&Policy::default(), &req, || {
            self.request(Method::PUT, &url).body(bytes.clone())
        })?;
        success(&req, resp)
    }

    /// Upload from a reader in constant memory (the body streams; it cannot be retried).
    pub fn put_reader(
        &self,
        path: &str,
        body: Box<dyn Read + Send>,
        len: Option<u64>,
    ) -> Result<()> {
        check_path(path)?;
        self.ensure_parents(path)?;
        let url = join(&self.base, path);
        let doing = match len {
            Some(n) => format!("uploading {n} bytes"),
            None => "uploading a stream".to_string(),
        };
        let body = match len {
            Some(n) => Body::sized(body, n),
            None => Body::new(body),
        };
        let req = request("PUT", &url, &doing, false);
        let resp = http::send_once(&req, self.request(Method::PUT, &url).body(body))?;
        success(&req, resp)
    }

    /// The object, or `None` if it does not exist.
    pub fn get_bytes(&self, path: &str) -> Result<Option<Vec<u8>>> {
        check_path(path)?;
        let url = join(&self.base, path);
        let req = request("GET", &url, "downloading", true);
        let resp = http::send(&Policy::default(), &req, || self.request(Method::GET, &url))?;
        match resp.status() {
            s if s.is_success() => resp.bytes().map(|b| Some(b.to_vec())).map_err(|e| {
                CpiError::cloud(format!(
                    "GET {url} failed while reading the body: {}",
                    e.without_url()
                ))
                .retryable(true)
            }),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(req.status_error(resp).into()),
        }
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        self.found(Method::HEAD, path, "checking whether it exists")
    }

    /// Delete; `false` if there was nothing to delete.
    pub fn delete(&self, path: &str) -> Result<bool> {
        self.found(Method::DELETE, path, "deleting")
    }

    /// An idempotent request whose answer is 2xx (`true`) or 404 (`false`).
    fn found(&self, method: Method, path: &str, doing: &str) -> Result<bool> {
        check_path(path)?;
        let url = join(&self.base, path);
        let req = request(method.as_str(), &url, doing, true);
        let resp = http::send(&Policy::default(), &req, || {
            self.request(method.clone(), &url)
        })?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(req.status_error(resp).into()),
        }
    }

    /// MOVE `from` to `to`, replacing `to` (upload under a temporary name, then publish).
    pub fn move_to(&self, from: &str, to: &str) -> Result<()> {
        check_path(from)?;
        check_path(to)?;
        self.ensure_parents(to)?;
        let url = join(&self.base, from);
        let dest = join(&self.base, to);
        let doing = format!("moving it to {dest}");
        let req = request("MOVE", &url, &doing, false);
        let method = Method::from_bytes(b"MOVE").map_err(|e| CpiError::cpi(e.to_string()))?;
        let resp = http::send(&Policy::default(), &req, || {
            self.request(method.clone(), &url)
                .header("Destination", dest.as_str())
                .header("Overwrite", "T")
        })?;
        success(&req, resp)
    }

    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        let r = self.client.request(method, url.clone());
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p.expose())),
            None => r,
        }
    }

    /// MKCOL each missing ancestor of `path`, top down.
    fn ensure_parents(&self, path: &str) -> Result<()> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut coll = String::new();
        for seg in &segs[..segs.len().saturating_sub(1)] {
            coll.push_str(seg);
            coll.push('/');
            let known = self
                .collections
                .lock()
                .map(|g| g.contains(&coll))
                .unwrap_or(false);
            if known {
                continue;
            }
            let first = !coll[..coll.len() - 1].contains('/');
            let url = join(&self.base, &coll);
            let made = self.mkcol(&url)?;
            if !made && first {
                // 409: the configured collection itself is missing (a fresh nginx root):
                // create it, then its child.
                let own = join(&self.base, "/");
                if !self.mkcol(&own)? || !self.mkcol(&url)? {
                    return Err(CpiError::cloud(format!(
                        "MKCOL {url} answered HTTP 409 Conflict while creating the parent collection, \
                         also after creating {own}"
                    )));
                }
            } else if !made {
                return Err(CpiError::cloud(format!(
                    "MKCOL {url} answered HTTP 409 Conflict while creating the parent collection"
                )));
            }
            if let Ok(mut g) = self.collections.lock() {
                g.insert(coll.clone());
            }
        }
        Ok(())
    }

    /// MKCOL `url`: `true` if it exists now, `false` on 409 (its parent is missing).
    fn mkcol(&self, url: &Url) -> Result<bool> {
        let req = request("MKCOL", url, "creating the parent collection", true);
        let method = Method::from_bytes(b"MKCOL").map_err(|e| CpiError::cpi(e.to_string()))?;
        let resp = http::send(&Policy::default(), &req, || {
            self.request(method.clone(), url)
        })?;
        match resp.status() {
            // 405: it exists already (RFC 4918 9.3.1), on nginx and dav-server alike.
            s if s.is_success() || s == StatusCode::METHOD_NOT_ALLOWED => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            _ => Err(req.status_error(resp).into()),
        }
    }
}

fn request<'a>(method: &'a str, url: &'a Url, doing: &'a str, idempotent: bool) -> Request<'a> {
    Request {
        method,
        url,
        doing,
        idempotent,
    }
}

/// Any 2xx is success.
fn success(req: &Request, resp: Response) -> Result<()> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(req.status_error(resp).into())
    }
}

/// A configured collection URL (without credentials), stored without a trailing `/`.
fn collection(key: &str, raw: &str) -> Result<Url> {
    let mut u = Url::parse(raw)
        .ok()
        .filter(|u| !u.cannot_be_a_base())
        .ok_or_else(|| {
            CpiError::cpi(format!(
                "repository.{key} '{}' is not an http(s) URL",
                redact::url_text(raw)
            ))
        })?;
    if let Ok(mut segments) = u.path_segments_mut() {
        segments.pop_if_empty();
    }
    Ok(u)
}

/// `path`'s segments below `base`, each percent-encoded; a trailing `/` (a collection) stays.
fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    // `collection` made sure the base can have segments.
    if let Ok(mut segments) = u.path_segments_mut() {
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
        if path.ends_with('/') {
            segments.push("");
        }
    }
    u
}

fn check_path(path: &str) -> Result<()> {
    let bad = path.split('/').any(|s| s == "." || s == "..")
        || path.trim_matches('/').is_empty()
        || path.contains(['\0', '\\']);
    if bad {
        Err(CpiError::cpi(format!(
            "repository path '{path}' is not a plain relative path"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Seconds;

    fn cfg(url: &str) -> RepositoryConfig {
        RepositoryConfig {
            url: url.into(),
            public_url: None,
            username: None,
            password: None,
            ca_cert_file: None,
            timeout: Seconds::from_secs(5),
        }
    }

    #[test]
    fn urls_are_encoded_and_carry_no_credentials() {
        let r = Repository::new(&cfg("http://u:secret@h:1/images/")).unwrap();
        assert_eq!(r.url("a b/c#d.img"), "http://h:1/images/a%20b/c%23d.img");
        assert_eq!(r.url("/x/y/"), "http://h:1/images/x/y/");
        assert_eq!(r.public_url("x"), "http://h:1/images/x");
        assert_eq!(r.auth.as_ref().map(|a| a.0.as_str()), Some("u"));
        let mut c = cfg("http://h:1/images");
        c.public_url = Some("http://10.0.0.1/images".into());
        let r = Repository::new(&c).unwrap();
        assert_eq!(r.public_url("x"), "http://10.0.0.1/images/x");
        let r = Repository::new(&cfg("http://h:1")).unwrap();
        assert_eq!(r.url("x/"), "http://h:1/x/");
        assert_eq!(join(&r.base, "/").as_str(), "http://h:1/");
        let e = Repository::new(&cfg("u:secret@h:1/images")).err().unwrap();
        assert!(
            e.message.contains("is not an http(s) URL") && !e.message.contains("secret"),
            "{}",
            e.message
        );
        assert!(check_path("../x").is_err());
        assert!(check_path("a/./b").is_err());
        assert!(check_path("").is_err());
        assert!(check_path("a/b").is_ok());
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let mut c = cfg("https://h/images");
        c.ca_cert_file = Some("/nonexistent/ca.pem".into());
        let e = Repository::new(&c).err().unwrap();
        assert!(e.message.contains("ca_cert_file"), "{}", e.message);
    }
}
