//! Sending a request with the retry policy, for the clients that take answers as they come (the
//! WebDAV and registry clients; the Ironic client reads and judges its answers itself, and runs
//! [`crate::retry::run`] directly).

use std::cell::Cell;
use std::time::Duration;

use ironic_cpi_common::redact;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use url::Url;

use crate::error::BODY_SHOWN;
use crate::retry::{self, Policy, Verdict};
use crate::{describe, HttpError};

/// What is sent, for the retry decision, logs and errors.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Shown without its credentials.
    pub url: &'a Url,
    /// What is being done, for messages ("uploading 5 bytes").
    pub doing: &'a str,
    /// Repeating the request is harmless. Others are repeated only when the connection could
    /// not be made, since then the request cannot have reached the server.
    pub idempotent: bool,
}

impl Request<'_> {
    /// The error for an answer the caller did not want, with the start of its body.
    pub fn status_error(&self, resp: Response) -> HttpError {
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = resp.text().unwrap_or_default();
        HttpError::Status {
            method: self.method.to_string(),
            url: redact::url(self.url),
            doing: self.doing.to_string(),
            status,
            body: body.trim().chars().take(BODY_SHOWN).collect(),
            retry_after,
        }
    }

    fn transport_error(&self, attempts: u32, e: &reqwest::Error) -> HttpError {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "failed"
        };
        HttpError::Transport {
            method: self.method.to_string(),
            url: redact::url(self.url),
            doing: self.doing.to_string(),
            kind,
            attempts,
            message: describe(e),
            not_sent: e.is_connect(),
        }
    }
}

/// Answers worth another attempt of an idempotent request.
fn transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

enum Failure {
    Answered(Box<Response>),
    Unanswered(reqwest::Error),
}

/// Send the request `build` makes (once per attempt) under `policy`. Idempotent requests are
/// retried on connection failures, timeouts and 502/503/504 (after the server's `Retry-After`);
/// others only when the connection could not be made. The last answer is returned whatever its
/// status.
pub fn send(
    policy: &Policy,
    req: &Request,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, HttpError> {
    let attempts = Cell::new(0u32);
    let result = retry::run(
        policy,
        || {
            attempts.set(attempts.get() + 1);
            match build().send() {
                Ok(resp) if req.idempotent && transient(resp.status()) => {
                    Err(Failure::Answered(Box::new(resp)))
                }
                Ok(resp) => Ok(resp),
                Err(e) => Err(Failure::Unanswered(e)),
            }
        },
        |f| match f {
            Failure::Answered(resp) => Verdict::Retry(retry_after(resp.headers())),
            Failure::Unanswered(e) if e.is_connect() || (req.idempotent && e.is_timeout()) => {
                Verdict::Retry(None)
            }
            Failure::Unanswered(_) => Verdict::Stop,
        },
        |f, delay| {
            let what = match f {
                Failure::Answered(resp) => format!("HTTP {}", resp.status()),
                Failure::Unanswered(e) => describe(e),
            };
            log::warn!(
                "{} {}: {what} while {}; retrying in {:.2} s (attempt {} failed)",
                req.method,
                redact::url(req.url),
                req.doing,
                delay.as_secs_f64(),
                attempts.get()
            );
        },
    );
    match result {
        Ok(resp) => Ok(resp),
        Err(Failure::Answered(resp)) => Ok(*resp),
        Err(Failure::Unanswered(e)) => Err(req.transport_error(attempts.get(), &e)),
    }
}

/// One attempt only: for streamed bodies, which cannot be sent twice.
pub fn send_once(req: &Request, builder: RequestBuilder) -> Result<Response, HttpError> {
    builder.send().map_err(|e| req.transport_error(1, &e))
}

/// A server's `Retry-After` in seconds (the HTTP-date form is not used by the servers we talk
/// to). A number too large for a `Duration` means "a long time", which the policy caps anyway.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("Retry-After", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("Retry-After", "1e300".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::MAX));
        h.insert("Retry-After", "-1".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(
            "Retry-After",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
