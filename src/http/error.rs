//! The HTTP layer's failures, with the method, the URL (never with credentials), what was being
//! done and how often it was tried; callers decide what they mean.

use std::time::Duration;

use ironic_cpi_common::redact;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configured CA bundle cannot be used.
    #[error("ca_cert_file {path} {problem}")]
    CaFile { path: String, problem: String },
    #[error("cannot build the HTTP client: {message}")]
    Build { message: String },
    /// No answer: the connection, the TLS handshake, sending or the wait for the answer failed.
    #[error("{method} {url} {kind} while {doing} (after {attempts} attempt(s)): {message}")]
    Transport {
        method: String,
        url: String,
        doing: String,
        kind: &'static str,
        attempts: u32,
        message: String,
        /// The connection could not be made: the request cannot have reached the server.
        not_sent: bool,
    },
    /// An answer that is not what the caller wanted; the start of its body (servers explain
    /// themselves there; it never holds our credentials).
    #[error("{method} {url} answered HTTP {status} while {doing}{}", detail(body))]
    Status {
        method: String,
        url: String,
        doing: String,
        status: u16,
        body: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

fn detail(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// The first characters of an error body worth showing.
pub(crate) const BODY_SHOWN: usize = 300;

/// reqwest's error as its causes ("tcp connect error: Connection refused"), without the URL
/// reqwest would print (callers name the URL themselves, without credentials).
pub fn describe(e: &reqwest::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => chain(Vec::new(), Some(cause)),
        None => chain(vec![e.to_string()], None),
    }
}

/// `parts` and the messages of `source` and its causes, each once, joined by ": ". Words that
/// look like URLs lose their credentials.
pub fn chain(
    mut parts: Vec<String>,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let joined = parts.join(": ");
    if !joined.contains('@') {
        return joined;
    }
    joined
        .split(' ')
        .map(|w| {
            if w.contains("://") {
                redact::url_text(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_name_each_cause_once_and_no_credentials() {
        let inner = std::io::Error::other("refused by http://u:pw@h:1/x");
        let outer = std::io::Error::other(inner);
        assert_eq!(
            chain(vec!["reading".into()], Some(&outer)),
            "reading: refused by http://h:1/x"
        );
    }
}
