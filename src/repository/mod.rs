//! The CPI's WebDAV client for the stemcell and metadata repositories: the companion server or
//! nginx's dav module, which many Ironic installations already run for images.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};

use crate::config::{RepositoryConfig, Secret};
use crate::error::{CpiError, Result};

pub struct Repository {
    http: Client,
    base: url::Url,
    public_base: String,
    auth: Option<(String, Secret)>,
}

impl Repository {
    pub fn new(cfg: &RepositoryConfig) -> Result<Repository> {
        let base = collection_url(&cfg.url, "url")?;
        let public_base = collection_url(cfg.public_base(), "public_url")?.to_string();
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs_f64(cfg.timeout.max(1.0)))
            .user_agent(concat!("ironic_cpi/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_cert_file {
            let pem = std::fs::read(path).map_err(|e| {
                CpiError::cpi(format!(
                    "repository ca_cert_file {path}: cannot read it: {e}"
                ))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CpiError::cpi(format!(
                    "repository ca_cert_file {path}: not a PEM bundle: {e}"
                ))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| CpiError::cpi(format!("repository HTTP client: {e}")))?;
        let auth = cfg
            .username
            .clone()
            .map(|u| (u, cfg.password.clone().unwrap_or_default()));
        Ok(Repository {
            http,
            base,
            public_base,
            auth,
        })
    }

    /// URL the CPI uses; never carries credentials.
    pub fn url(&self, path: &str) -> String {
        join(self.base.as_str(), path)
    }

    /// URL Ironic's conductors download from.
    pub fn public_url(&self, path: &str) -> String {
        join(&self.public_base, path)
    }

    pub fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        // Most PUTs land in an existing folder: try first, create parents only when refused.
        let resp = self.send(
            self.request(Method::PUT, path).body(bytes.clone()),
            "PUT",
            path,
        )?;
        if resp.status() == StatusCode::CONFLICT || resp.status() == StatusCode::NOT_FOUND {
            self.make_parents(path)?;
            let resp = self.send(self.request(Method::PUT, path).body(bytes), "PUT", path)?;
            return self.expect_success(resp, "PUT", path);
        }
        self.expect_success(resp, "PUT", path)
    }

    /// Stream a body of known or unknown length; memory stays flat whatever its size.
    pub fn put_reader(
        &self,
        path: &str,
        body: Box<dyn Read + Send>,
        len: Option<u64>,
    ) -> Result<()> {
        self.make_parents(path)?;
        let body = match len {
            Some(len) => Body::sized(body, len),
            None => Body::new(body),
        };
        // Large images take longer than one request timeout; the connect timeout still applies.
        let req = self
            .request(Method::PUT, path)
            .body(body)
            .timeout(Duration::from_secs(24 * 3600));
        let resp = self.send(req, "PUT", path)?;
        self.expect_success(resp, "PUT", path)
    }

    pub fn get_bytes(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let resp = self.send(self.request(Method::GET, path), "GET", path)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.check(resp, "GET", path)?;
        resp.bytes().map(|b| Some(b.to_vec())).map_err(|e| {
            CpiError::cloud(format!(
                "WebDAV GET {}: reading the body: {e}",
                self.url(path)
            ))
        })
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        let resp = self.send(self.request(Method::HEAD, path), "HEAD", path)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.check(resp, "HEAD", path).map(|_| true)
    }

    /// Delete a file, or a collection when `path` ends in `/`; false when it was not there.
    pub fn delete(&self, path: &str) -> Result<bool> {
        let resp = self.send(self.request(Method::DELETE, path), "DELETE", path)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.check(resp, "DELETE", path).map(|_| true)
    }

    pub fn move_to(&self, from: &str, to: &str) -> Result<()> {
        self.make_parents(to)?;
        let req = self
            .request(Method::from_bytes(b"MOVE").expect("MOVE is a method"), from)
            .header("Destination", self.url(to))
            .header("Overwrite", "T");
        let resp = self.send(req, "MOVE", from)?;
        self.expect_success(resp, "MOVE", from)
    }

    /// MKCOL each missing ancestor, top down. Existing ones answer 405 (or 301 on nginx).
    fn make_parents(&self, path: &str) -> Result<()> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut prefix = String::new();
        for dir in &parts[..parts.len().saturating_sub(1)] {
            if dir.is_empty() {
                continue;
            }
            prefix.push_str(dir);
            prefix.push('/');
            let mkcol = Method::from_bytes(b"MKCOL").expect("MKCOL is a method");
            let resp = self.send(self.request(mkcol, &prefix), "MKCOL", &prefix)?;
            let s = resp.status();
            if !(s.is_success() || s == StatusCode::METHOD_NOT_ALLOWED || s.is_redirection()) {
                self.check(resp, "MKCOL", &prefix)?;
            }
        }
        Ok(())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.auth {
            Some((user, password)) => req.basic_auth(user, Some(password.expose())),
            None => req,
        }
    }

    fn send(&self, req: RequestBuilder, method: &str, path: &str) -> Result<Response> {
        req.send().map_err(|e| {
            CpiError::cloud(format!(
                "WebDAV {method} {}: {}",
                self.url(path),
                error_chain(&e)
            ))
        })
    }

    fn check(&self, resp: Response, method: &str, path: &str) -> Result<Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
        Err(CpiError::cloud(format!(
            "WebDAV {method} {} answered {status}{}",
            self.url(path),
            if body.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", body.trim())
            }
        )))
    }

    fn expect_success(&self, resp: Response, method: &str, path: &str) -> Result<()> {
        self.check(resp, method, path).map(drop)
    }
}

fn collection_url(s: &str, key: &str) -> Result<url::Url> {
    let mut url =
        url::Url::parse(s).map_err(|e| CpiError::cpi(format!("repository {key} '{s}': {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CpiError::cpi(format!(
            "repository {key}: put credentials in username/password, not in the URL"
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Append a relative path, percent-encoding each segment (keeps a trailing `/`).
fn join(base: &str, path: &str) -> String {
    let encoded: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|seg| {
            percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2E", ".")
                .replace("%2D", "-")
                .replace("%5F", "_")
                .replace("%7E", "~")
        })
        .collect();
    format!("{base}{}", encoded.join("/"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_joined_and_encoded() {
        assert_eq!(
            join("http://h/images/", "a b/root.img"),
            "http://h/images/a%20b/root.img"
        );
        assert_eq!(
            join("http://h/images/", "x-1.2_3/"),
            "http://h/images/x-1.2_3/"
        );
        let cfg = RepositoryConfig {
            url: "http://h:1/images".into(),
            public_url: Some("http://10.0.0.1:1/images".into()),
            username: None,
            password: None,
            ca_cert_file: None,
            timeout: 5.0,
        };
        let r = Repository::new(&cfg).unwrap();
        assert_eq!(r.url("s/root.img"), "http://h:1/images/s/root.img");
        assert_eq!(
            r.public_url("s/root.img"),
            "http://10.0.0.1:1/images/s/root.img"
        );
        let bad = RepositoryConfig {
            url: "http://u:p@h/images".into(),
            ..cfg
        };
        let e = Repository::new(&bad).err().unwrap();
        assert!(!e.message.contains(":p@"), "{}", e.message);
    }
}
