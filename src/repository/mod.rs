//! The CPI's WebDAV client: stemcell images and config drives on the companion server or nginx.
//!
//! Paths are relative to the configured collection URL (`stemcells/<uuid>/image`), `/`-separated;
//! each segment is percent-encoded, and `.`/`..` segments are refused. Parent collections are
//! created with MKCOL before uploads and moves (dav-server answers 409 for a missing parent; nginx
//! creates them only with `create_full_put_path`), and remembered so that each is made once.
//!
//! Credentials go in an `Authorization` header only: URLs in messages and in `url()` never carry
//! them. A `user:password@` in the configured URL is taken out and used as basic auth.

pub(crate) mod http;

use std::collections::HashSet;
use std::io::Read;
use std::sync::Mutex;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::blocking::{Body, Client, RequestBuilder};
use reqwest::{Method, StatusCode};

use crate::config::{RepositoryConfig, Secret};
use crate::error::{CpiError, Result};

/// Characters left alone in a path segment (RFC 3986 unreserved).
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub struct Repository {
    base: String,
    public_base: String,
    auth: Option<(String, Secret)>,
    client: Client,
    /// Collections known to exist (relative paths with a trailing `/`).
    collections: Mutex<HashSet<String>>,
}

impl Repository {
    pub fn new(cfg: &RepositoryConfig) -> Result<Repository> {
        let (base, embedded) = http::split_userinfo(cfg.url.trim());
        let auth = match (&cfg.username, &cfg.password, embedded) {
            (Some(u), p, _) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, _, Some((u, p))) => Some((u, Secret::new(p))),
            (None, _, None) => None,
        };
        let public_base = match &cfg.public_url {
            Some(p) => p.trim().to_string(),
            None => base.clone(),
        };
        let client = http::client(
            &format!("repository {base}"),
            cfg.ca_cert_file.as_deref(),
            cfg.timeout.get(),
        )?;
        Ok(Repository {
            base: base.trim_end_matches('/').to_string(),
            public_base: public_base.trim_end_matches('/').to_string(),
            auth,
            client,
            collections: Mutex::new(HashSet::new()),
        })
    }

    /// The URL the CPI uses for `path` (no credentials in it).
    pub fn url(&self, path: &str) -> String {
        join(&self.base, path)
    }

    /// The URL Ironic downloads `path` from: `public_url` if configured, else `url`.
    pub fn public_url(&self, path: &str) -> String {
        join(&self.public_base, path)
    }

    pub fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        check_path(path)?;
        self.ensure_parents(path)?;
        let url = self.url(path);
        let doing = format!("uploading {} bytes", bytes.len());
        // Bytes: each attempt shares the buffer instead of copying it.
        let bytes = bytes::Bytes::from(bytes);
        let resp = http::send("PUT", &url, &doing, true, || {
            self.request(Method::PUT, &url).body(bytes.clone())
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(http::status_error("PUT", &url, &doing, resp))
        }
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
        let url = self.url(path);
        let doing = match len {
            Some(n) => format!("uploading {n} bytes"),
            None => "uploading a stream".to_string(),
        };
        let body = match len {
            Some(n) => Body::sized(body, n),
            None => Body::new(body),
        };
        let req = self.request(Method::PUT, &url).body(body);
        let resp = http::send_once("PUT", &url, &doing, req)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(http::status_error("PUT", &url, &doing, resp))
        }
    }

    /// The object, or `None` if it does not exist.
    pub fn get_bytes(&self, path: &str) -> Result<Option<Vec<u8>>> {
        check_path(path)?;
        let url = self.url(path);
        let doing = "downloading";
        let resp = http::send("GET", &url, doing, true, || self.request(Method::GET, &url))?;
        match resp.status() {
            s if s.is_success() => resp.bytes().map(|b| Some(b.to_vec())).map_err(|e| {
                CpiError::cloud(format!(
                    "GET {url} failed while reading the body: {}",
                    e.without_url()
                ))
                .retryable(true)
            }),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(http::status_error("GET", &url, doing, resp)),
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
        let url = self.url(path);
        let name = method.as_str().to_string();
        let resp = http::send(&name, &url, doing, true, || {
            self.request(method.clone(), &url)
        })?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(http::status_error(&name, &url, doing, resp)),
        }
    }

    /// MOVE `from` to `to`, replacing `to` (upload under a temporary name, then publish).
    pub fn move_to(&self, from: &str, to: &str) -> Result<()> {
        check_path(from)?;
        check_path(to)?;
        self.ensure_parents(to)?;
        let url = self.url(from);
        let dest = self.url(to);
        let doing = format!("moving it to {dest}");
        let method = Method::from_bytes(b"MOVE").map_err(|e| CpiError::cpi(e.to_string()))?;
        let resp = http::send("MOVE", &url, &doing, false, || {
            self.request(method.clone(), &url)
                .header("Destination", dest.as_str())
                .header("Overwrite", "T")
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(http::status_error("MOVE", &url, &doing, resp))
        }
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let r = self.client.request(method, url);
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
            let made = self.mkcol(&self.url(&coll))?;
            if !made && first {
                // 409: the configured collection itself is missing (a fresh nginx root):
                // create it, then its child.
                if !self.mkcol(&format!("{}/", self.base))? || !self.mkcol(&self.url(&coll))? {
                    let url = self.url(&coll);
                    return Err(CpiError::cloud(format!(
                        "MKCOL {url} answered HTTP 409 Conflict while creating the parent collection, \
                         also after creating {}/",
                        self.base
                    )));
                }
            } else if !made {
                let url = self.url(&coll);
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
    fn mkcol(&self, url: &str) -> Result<bool> {
        let doing = "creating the parent collection";
        let method = Method::from_bytes(b"MKCOL").map_err(|e| CpiError::cpi(e.to_string()))?;
        let resp = http::send("MKCOL", url, doing, true, || {
            self.request(method.clone(), url)
        })?;
        match resp.status() {
            // 405: it exists already (RFC 4918 9.3.1), on nginx and dav-server alike.
            s if s.is_success() || s == StatusCode::METHOD_NOT_ALLOWED => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            _ => Err(http::status_error("MKCOL", url, doing, resp)),
        }
    }
}

fn join(base: &str, path: &str) -> String {
    let mut out = String::with_capacity(base.len() + path.len() + 8);
    out.push_str(base);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    if path.ends_with('/') && !path.trim_matches('/').is_empty() {
        out.push('/');
    }
    out
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
