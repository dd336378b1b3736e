//! What the CPI's WebDAV and registry clients share: building a blocking HTTP client that trusts
//! the configured CA, retrying transient failures, and turning failures into `CpiError`s that
//! name the method, URL (never with credentials), status and what was being done.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;

use crate::error::{CpiError, Result};

/// Attempts for idempotent requests (transport errors, 502, 503, 504).
const ATTEMPTS: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn client(what: &str, ca_cert_file: Option<&str>, timeout: Duration) -> Result<Client> {
    let mut b = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .user_agent(concat!("ironic_cpi/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_cert_file {
        let pem = std::fs::read(path)
            .map_err(|e| CpiError::cpi(format!("{what}: cannot read ca_cert_file {path}: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            CpiError::cpi(format!(
                "{what}: ca_cert_file {path} holds no PEM certificate: {e}"
            ))
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| CpiError::cpi(format!("{what}: cannot build the HTTP client: {e}")))
}

/// Whether a status is worth another attempt.
fn transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Send a request built by `build` (called once per attempt). `idempotent` requests are retried
/// on transport errors and 502/503/504; others only when the connection could not be made, since
/// then the request cannot have reached the server. `doing` describes the operation for errors
/// ("uploading …"); `method` and `url` must carry no credentials.
pub(crate) fn send(
    method: &str,
    url: &str,
    doing: &str,
    idempotent: bool,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response> {
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        let last = attempt >= ATTEMPTS;
        match build().send() {
            Ok(resp) if idempotent && !last && transient(resp.status()) => {
                log::warn!(
                    "{method} {url}: HTTP {} while {doing}; attempt {attempt} of {ATTEMPTS}",
                    resp.status()
                );
            }
            Ok(resp) => return Ok(resp),
            Err(e) if !last && (e.is_connect() || (idempotent && e.is_timeout())) => {
                log::warn!(
                    "{method} {url}: {} while {doing}; attempt {attempt} of {ATTEMPTS}",
                    e.without_url()
                );
            }
            Err(e) => return Err(transport_error(method, url, doing, attempt, &e)),
        }
        std::thread::sleep(delay);
        delay *= 2;
        attempt += 1;
    }
}

/// One attempt only: for streamed bodies, which cannot be sent twice.
pub(crate) fn send_once(
    method: &str,
    url: &str,
    doing: &str,
    req: RequestBuilder,
) -> Result<Response> {
    req.send()
        .map_err(|e| transport_error(method, url, doing, 1, &e))
}

fn transport_error(
    method: &str,
    url: &str,
    doing: &str,
    attempts: u32,
    e: &reqwest::Error,
) -> CpiError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    CpiError::cloud(format!(
        "{method} {url} {kind} while {doing} (after {attempts} attempt(s)): {}",
        error_chain(e)
    ))
    .retryable(true)
}

/// The error for an unexpected status, with the start of the body (servers explain themselves
/// there; it never holds our credentials).
pub(crate) fn status_error(method: &str, url: &str, doing: &str, resp: Response) -> CpiError {
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    let detail = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    CpiError::cloud(format!(
        "{method} {url} answered HTTP {status} while {doing}{detail}"
    ))
    .retryable(status.is_server_error())
}

/// The error and its causes, without the URL reqwest would print (ours is already in the message).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// `base` without `user:password@`, and the credentials it carried.
pub(crate) fn split_userinfo(base: &str) -> (String, Option<(String, String)>) {
    match url::Url::parse(base) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let creds = (dec(u.username()), dec(u.password().unwrap_or("")));
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let mut s = u.to_string();
            if !base.ends_with('/') && s.ends_with('/') {
                s.pop();
            }
            (s, Some(creds))
        }
        _ => (base.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_split_off() {
        assert_eq!(
            split_userinfo("http://u:p%40ss@h:1/images"),
            (
                "http://h:1/images".to_string(),
                Some(("u".to_string(), "p@ss".to_string()))
            )
        );
        assert_eq!(
            split_userinfo("http://h/x/"),
            ("http://h/x/".to_string(), None)
        );
    }
}
