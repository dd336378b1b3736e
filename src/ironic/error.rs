//! What can go wrong talking to Ironic, in kinds that callers match on (not found, lost race,
//! transient lock) and messages an operator can act on.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// The two 409s Ironic sends mean opposite things: retry (lock) or give up (someone owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// "Node X is locked by host H, please retry ...": transient.
    NodeLocked,
    /// "Node X is associated with instance Y": final, another consumer owns the node.
    Associated,
    /// The action is not allowed in the node's current provision state.
    InvalidState,
    /// Anything else (duplicate MAC or name, allocation of an active node, ...).
    Other,
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictKind::NodeLocked => "node locked",
            ConflictKind::Associated => "node associated with an instance",
            ConflictKind::InvalidState => "invalid state",
            ConflictKind::Other => "conflict",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
/// The wait variants keep `state`, `target` and `reason` as `Box<str>` so that the whole error
/// stays small enough to return by value everywhere (clippy's `result_large_err`).
pub enum IronicError {
    #[error("Ironic {resource} '{id}' not found: {message}")]
    NotFound {
        resource: String,
        id: String,
        message: String,
    },
    #[error("Ironic refused the request ({kind}): {message}")]
    Conflict { kind: ConflictKind, message: String },
    #[error("Ironic is unavailable (503): {message}")]
    ServiceUnavailable { message: String },
    #[error("Ironic rejected the request (400): {message}")]
    BadRequest { message: String },
    #[error("Ironic refused the credentials ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("Ironic does not accept the requested API microversion (406): {message}")]
    NotAcceptable { message: String },
    #[error("Ironic answered {method} {path} with HTTP {status}: {message}")]
    Http {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach {service} ({method} {url}): {message}")]
    Transport {
        /// `Ironic` or `Keystone`.
        service: &'static str,
        method: String,
        url: String,
        message: String,
        /// The request never left this host (connection refused, DNS), so repeating it is safe.
        not_sent: bool,
    },
    #[error("Ironic at {url} supports API microversions {server_min} to {server_max}, this CPI needs {required_min} or later")]
    Microversion {
        url: String,
        server_min: String,
        server_max: String,
        required_min: String,
    },
    #[error("node {node} failed while waiting for {target}: it is in state '{state}' after {:.1} s ({reason}); last_error: {}", elapsed.as_secs_f64(), last_error.as_deref().unwrap_or("none"))]
    WaitFailed {
        node: String,
        state: Box<str>,
        target: Box<str>,
        last_error: Option<String>,
        elapsed: Duration,
        reason: Box<str>,
    },
    #[error("node {node} did not reach {target} within {:.0} s: still in state '{state}' after {:.1} s; last_error: {}", waited_for.as_secs_f64(), elapsed.as_secs_f64(), last_error.as_deref().unwrap_or("none"))]
    WaitTimeout {
        node: String,
        state: Box<str>,
        target: Box<str>,
        waited_for: Duration,
        elapsed: Duration,
        last_error: Option<String>,
    },
    /// The TLS handshake failed: a certificate problem no retry can fix.
    #[error("cannot reach {service} at {url} over TLS: {message}")]
    Tls {
        service: &'static str,
        url: String,
        message: String,
    },
    #[error("Keystone authentication failed: {message}")]
    Auth { message: String },
    #[error("unexpected answer from Ironic to {what}: {message}")]
    Decode { what: String, message: String },
    /// An answer body over `ironic.max_response_bytes`: read no further, whatever the server
    /// sends (an endless body, a wrong Content-Length).
    #[error("Ironic's answer to {method} {url} is larger than ironic.max_response_bytes ({cap} bytes){}: the CPI read no further. A smaller ironic.page_size makes list pages smaller; a larger cap admits larger answers", declared.map(|n| format!("; it announced {n} bytes")).unwrap_or_default())]
    ResponseTooLarge {
        method: String,
        url: String,
        cap: u64,
        /// The answer's Content-Length, when it announced one.
        declared: Option<u64>,
        /// The request changes something and Ironic accepted it (2xx): the change happened
        /// although its answer was not read.
        applied: bool,
    },
    #[error("invalid Ironic client configuration: {message}")]
    Config { message: String },
}

impl IronicError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, IronicError::NotFound { .. })
    }

    /// Worth repeating after a pause: a held node lock, no free conductor, or a connection failure.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            IronicError::Conflict {
                kind: ConflictKind::NodeLocked,
                ..
            } | IronicError::ServiceUnavailable { .. }
                | IronicError::Transport { .. }
        )
    }

    /// The request may have reached Ironic and been applied although no answer came back (the
    /// connection broke or timed out after sending): the caller must read back what happened.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            IronicError::Transport {
                not_sent: false,
                ..
            } | IronicError::ResponseTooLarge { applied: true, .. }
        )
    }

    /// Another consumer owns the node: move on to another candidate, never retry.
    pub fn is_final_conflict(&self) -> bool {
        matches!(
            self,
            IronicError::Conflict {
                kind: ConflictKind::Associated,
                ..
            }
        )
    }

    /// The credentials or the TLS trust are wrong: trying again cannot succeed until the
    /// operator changes the configuration.
    pub fn needs_configuration(&self) -> bool {
        matches!(
            self,
            IronicError::Auth { .. }
                | IronicError::Unauthorized { .. }
                | IronicError::Tls { .. }
                | IronicError::Config { .. }
        )
    }

    pub fn conflict_kind(&self) -> Option<ConflictKind> {
        match self {
            IronicError::Conflict { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Map an HTTP error answer to its kind. `resource` and `id` name what the path addressed.
    pub(crate) fn from_status(
        method: &str,
        path: &str,
        status: u16,
        body: &str,
        resource: &str,
        id: &str,
    ) -> IronicError {
        let message = error_message(body);
        match status {
            400 => IronicError::BadRequest { message },
            401 | 403 => IronicError::Unauthorized { status, message },
            404 => IronicError::NotFound {
                resource: resource.to_string(),
                id: id.to_string(),
                message,
            },
            406 => IronicError::NotAcceptable { message },
            409 => IronicError::Conflict {
                kind: classify_conflict(&message),
                message,
            },
            503 => IronicError::ServiceUnavailable { message },
            _ => IronicError::Http {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message,
            },
        }
    }
}

/// Ironic words its 409s differently per cause; the exception text is the only discriminator
/// the API offers (faultcode is just "Client").
pub fn classify_conflict(message: &str) -> ConflictKind {
    let m = message.to_ascii_lowercase();
    if m.contains("is locked by host") || m.contains("please retry after") {
        ConflictKind::NodeLocked
    } else if m.contains("is associated with instance") {
        ConflictKind::Associated
    } else if m.contains("while it is in state")
        || m.contains("in state")
        || m.contains("can not be performed")
        || m.contains("cannot be performed")
    {
        ConflictKind::InvalidState
    } else {
        ConflictKind::Other
    }
}

/// The longest raw body quoted in an error message: enough to act on, short enough for a log line.
const MAX_RAW: usize = 500;

/// The human part of an Ironic (or Keystone) error body.
///
/// Ironic wraps a JSON document in a JSON string: `{"error_message": "{\"faultstring\": ...}"}`;
/// a 406 carries `code/title/description` inside instead. Keystone answers `{"error": {"message"}}`.
/// Anything else is quoted raw, shortened.
pub fn error_message(body: &str) -> String {
    let trimmed = body.trim();
    if let Ok(outer) = serde_json::from_str::<Value>(trimmed) {
        if let Some(msg) = outer.get("error_message") {
            let inner = match msg {
                Value::String(s) => serde_json::from_str::<Value>(s)
                    .ok()
                    .and_then(|v| inner_message(&v))
                    .unwrap_or_else(|| s.clone()),
                other => inner_message(other).unwrap_or_else(|| other.to_string()),
            };
            return shorten(inner.trim());
        }
        if let Some(msg) = inner_message(&outer) {
            return shorten(msg.trim());
        }
        if let Some(msg) = outer.get("error").and_then(inner_message) {
            return shorten(msg.trim());
        }
    }
    if trimmed.is_empty() {
        return "(empty response body)".to_string();
    }
    shorten(trimmed)
}

fn inner_message(v: &Value) -> Option<String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(f) = s("faultstring") {
        return Some(f);
    }
    match (s("title"), s("description")) {
        (Some(t), Some(d)) => Some(format!("{t}: {d}")),
        (None, Some(d)) => Some(d),
        (Some(t), None) => s("message").map(|m| format!("{t}: {m}")).or(Some(t)),
        (None, None) => s("message"),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_RAW {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX_RAW).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ironic_fault_inside_a_json_string() {
        let body = r#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node n1 is locked by host localhost, please retry after the current operation is completed.\", \"debuginfo\": null}"}"#;
        let e = IronicError::from_status("PATCH", "/v1/nodes/n1", 409, body, "node", "n1");
        assert_eq!(e.conflict_kind(), Some(ConflictKind::NodeLocked));
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .contains("Node n1 is locked by host localhost"),
            "{e}"
        );
    }

    #[test]
    fn associated_conflict_is_final() {
        let body = r#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node 1be2 is associated with instance 77aa.\", \"debuginfo\": null}"}"#;
        let e = IronicError::from_status("PATCH", "/v1/nodes/x", 409, body, "node", "x");
        assert!(e.is_final_conflict());
        assert!(!e.is_transient());
    }

    #[test]
    fn parses_406_shape() {
        let body = r#"{"error_message": "{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": \"Version 1.999 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115].\"}"}"#;
        let e = IronicError::from_status("GET", "/v1/nodes", 406, body, "node", "");
        assert!(matches!(e, IronicError::NotAcceptable { .. }));
        assert!(e.to_string().contains("[1.1, 1.115]"), "{e}");
        assert!(e.to_string().contains("Not Acceptable"), "{e}");
    }

    #[test]
    fn falls_back_to_raw_text() {
        assert_eq!(
            error_message("<html>Bad Gateway</html>"),
            "<html>Bad Gateway</html>"
        );
        assert_eq!(error_message(""), "(empty response body)");
        assert_eq!(
            error_message(r#"{"error_message": "not json inside"}"#),
            "not json inside"
        );
        let long = "x".repeat(2000);
        assert!(error_message(&long).len() < 600);
    }

    #[test]
    fn parses_keystone_error() {
        let body = r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
        assert_eq!(
            error_message(body),
            "Unauthorized: The request you have made requires authentication."
        );
    }

    #[test]
    fn status_kinds() {
        let k = |s| IronicError::from_status("GET", "/v1/nodes/a", s, "", "node", "a");
        assert!(k(404).is_not_found());
        assert!(matches!(k(400), IronicError::BadRequest { .. }));
        assert!(matches!(k(401), IronicError::Unauthorized { .. }));
        assert!(matches!(k(503), IronicError::ServiceUnavailable { .. }));
        assert!(k(503).is_transient());
        assert!(!k(400).is_transient() && !k(404).is_transient());
        assert!(matches!(k(500), IronicError::Http { status: 500, .. }));
    }

    #[test]
    fn invalid_state_conflict() {
        let m = "The requested action \"deploy\" can not be performed on node \"n\" while it is in state \"active\".";
        assert_eq!(classify_conflict(m), ConflictKind::InvalidState);
        assert_eq!(
            classify_conflict("A port with MAC address 52:54:00:00:00:01 already exists."),
            ConflictKind::Other
        );
    }

    #[test]
    fn wait_messages_name_everything() {
        let e = IronicError::WaitTimeout {
            node: "n1 (uuid)".into(),
            state: "deploying".into(),
            target: "active".into(),
            waited_for: Duration::from_secs(30),
            elapsed: Duration::from_millis(30_100),
            last_error: None,
        };
        let s = e.to_string();
        for part in ["n1 (uuid)", "deploying", "active", "30 s", "30.1 s"] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
    }
}
