//! The CPI's failures, in the error family the BOSH director understands (the kinds are the
//! protocol crate's `ErrorKind`).
//!
//! Every failure of a CPI call becomes one of these before it reaches stdout: the director maps any
//! other `type` to `UnknownError` and fails the task, so nothing else may escape. `CpiError` lives
//! here rather than in the protocol crate because of the mapping from Ironic failures below: the
//! orphan rule allows `From<IronicError>` (what `?` uses in actions) only in a crate that owns one
//! of the two types. `CpiError::to_wire` gives the protocol's `Error` the response carries.

use std::fmt;
use std::sync::Arc;

pub use bosh_cpi_protocol::ErrorKind;

use crate::ironic::IronicError;

/// A failure on its way to the director: type, a message a person can act on, and whether the
/// director may simply call again.
///
/// The message already says what went wrong in words (the director shows only it); the error
/// that caused it is kept as the `source`, so the stderr log can show the chain and code can
/// ask what the cause was instead of reading the message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CpiError {
    pub kind: ErrorKind,
    pub message: String,
    pub ok_to_retry: bool,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are the same answer to the director when type, message and retry flag agree.
impl PartialEq for CpiError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.message == other.message
            && self.ok_to_retry == other.ok_to_retry
    }
}

impl Eq for CpiError {}

impl CpiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CpiError {
            kind,
            message: message.into(),
            ok_to_retry: false,
            source: None,
        }
    }

    /// Keep the error that caused this one (its text is usually in the message too).
    pub fn because(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The cause, when it is of type `E` (an Ironic failure, an I/O error).
    pub fn cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<E>())
    }

    /// Bad input: malformed request, wrong argument types, bad configuration.
    pub fn cpi(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CpiError, message)
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotImplemented, message)
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotSupported, message)
    }

    pub fn cloud(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CloudError, message)
    }

    pub fn vm_not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::VmNotFound, message)
    }

    /// `ok_to_retry` tells the director whether another create_vm could succeed (it retries up to
    /// `max_vm_create_tries` times); only say so once everything this call claimed is released.
    pub fn vm_creation_failed(message: impl Into<String>, ok_to_retry: bool) -> Self {
        Self::new(ErrorKind::VmCreationFailed, message).retryable(ok_to_retry)
    }

    pub fn disk_not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DiskNotFound, message)
    }

    pub fn disk_not_attached(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DiskNotAttached, message)
    }

    pub fn no_disk_space(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoDiskSpace, message)
    }

    pub fn retryable(mut self, ok_to_retry: bool) -> Self {
        self.ok_to_retry = ok_to_retry;
        self
    }

    /// Prefix the message with what was being done, keeping type and retry flag.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

pub type Result<T> = std::result::Result<T, CpiError>;

/// A protocol failure (a bad envelope or bad arguments) on its way through the CPI.
impl From<bosh_cpi_protocol::Error> for CpiError {
    fn from(e: bosh_cpi_protocol::Error) -> CpiError {
        CpiError::new(e.kind, e.message).retryable(e.ok_to_retry)
    }
}

impl CpiError {
    /// The failure as the response carries it.
    pub fn to_wire(&self) -> bosh_cpi_protocol::Error {
        bosh_cpi_protocol::Error::new(self.kind, self.message.clone()).retryable(self.ok_to_retry)
    }
}

/// Where an Ironic failure happened: that decides what the director is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Any call that reads or changes a VM, a disk or a node it owns: `CloudError`; the director
    /// may call again when the same request may pass later (a lock, a 503, a broken connection,
    /// a wait that ran out).
    Call,
    /// `create_vm` before it holds a node: nothing to undo, so `VMCreationFailed`, and another
    /// try may succeed unless the credentials, the TLS trust or the client configuration are
    /// wrong.
    BeforeClaim,
    /// `create_vm` while deploying the node it holds (the rollback then releases the node and
    /// keeps the flag): another node may do, unless Ironic refused the request itself (400: the
    /// vm_type's own root device hints or capabilities are wrong, and would be on any node).
    Deploying,
}

/// The one mapping of an Ironic failure to a `Bosh::Clouds` type and `ok_to_retry` (the table
/// in this file's tests); `what` says what was being done.
pub fn from_ironic(e: IronicError, stage: Stage, what: &str) -> CpiError {
    let (kind, retry) = match stage {
        Stage::Call => (
            ErrorKind::CloudError,
            e.is_transient() || matches!(e, IronicError::WaitTimeout { .. }),
        ),
        Stage::BeforeClaim => (ErrorKind::VmCreationFailed, !e.needs_configuration()),
        Stage::Deploying => (
            ErrorKind::CloudError,
            !matches!(e, IronicError::BadRequest { .. }),
        ),
    };
    let message = if what.is_empty() {
        e.to_string()
    } else {
        format!("{what}: {e}")
    };
    CpiError::new(kind, message).retryable(retry).because(e)
}

/// A WebDAV or registry failure: a client that cannot be built is the configuration's fault;
/// no answer, or a 5xx, may pass.
impl From<ironic_cpi_http::HttpError> for CpiError {
    fn from(e: ironic_cpi_http::HttpError) -> CpiError {
        use ironic_cpi_http::HttpError;
        let mapped = match &e {
            HttpError::CaFile { .. } | HttpError::Build { .. } => CpiError::cpi(e.to_string()),
            HttpError::Transport { .. } => CpiError::cloud(e.to_string()).retryable(true),
            HttpError::Status { status, .. } => {
                CpiError::cloud(e.to_string()).retryable(*status >= 500)
            }
        };
        mapped.because(e)
    }
}

/// A plain call's Ironic failure (`?` in actions): [`Stage::Call`].
impl From<IronicError> for CpiError {
    fn from(e: IronicError) -> CpiError {
        from_ironic(e, Stage::Call, "")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ironic::ConflictKind;

    fn samples() -> Vec<(&'static str, IronicError)> {
        let m = || "m".to_string();
        vec![
            (
                "404",
                IronicError::NotFound {
                    resource: "node".into(),
                    id: "n".into(),
                    message: m(),
                },
            ),
            (
                "409 locked",
                IronicError::Conflict {
                    kind: ConflictKind::NodeLocked,
                    message: m(),
                },
            ),
            (
                "409 associated",
                IronicError::Conflict {
                    kind: ConflictKind::Associated,
                    message: m(),
                },
            ),
            (
                "409 state",
                IronicError::Conflict {
                    kind: ConflictKind::InvalidState,
                    message: m(),
                },
            ),
            ("503", IronicError::ServiceUnavailable { message: m() }),
            ("400", IronicError::BadRequest { message: m() }),
            (
                "401",
                IronicError::Unauthorized {
                    status: 401,
                    message: m(),
                },
            ),
            ("406", IronicError::NotAcceptable { message: m() }),
            (
                "500",
                IronicError::Http {
                    method: "GET".into(),
                    path: "/".into(),
                    status: 500,
                    message: m(),
                },
            ),
            (
                "transport",
                IronicError::Transport {
                    service: "Ironic",
                    method: "GET".into(),
                    url: "u".into(),
                    message: m(),
                    not_sent: true,
                },
            ),
            (
                "microversion",
                IronicError::Microversion {
                    url: "u".into(),
                    server_min: "1.1".into(),
                    server_max: "1.40".into(),
                    required_min: "1.52".into(),
                },
            ),
            (
                "wait failed",
                IronicError::WaitFailed {
                    node: "n".into(),
                    state: "deploy failed".into(),
                    target: "active".into(),
                    last_error: None,
                    elapsed: Duration::from_secs(1),
                    reason: "r".into(),
                },
            ),
            (
                "wait timeout",
                IronicError::WaitTimeout {
                    node: "n".into(),
                    state: "deploying".into(),
                    target: "active".into(),
                    waited_for: Duration::from_secs(1),
                    elapsed: Duration::from_secs(1),
                    last_error: None,
                },
            ),
            (
                "tls",
                IronicError::Tls {
                    service: "Ironic",
                    url: "u".into(),
                    message: m(),
                },
            ),
            ("keystone", IronicError::Auth { message: m() }),
            (
                "decode",
                IronicError::Decode {
                    what: "w".into(),
                    message: m(),
                },
            ),
            (
                "too large",
                IronicError::ResponseTooLarge {
                    method: "GET".into(),
                    url: "u".into(),
                    cap: 1,
                    declared: None,
                    applied: false,
                },
            ),
            ("config", IronicError::Config { message: m() }),
        ]
    }

    /// Every Ironic failure in every stage: the type the director gets and whether it retries.
    /// C = CloudError, F = VMCreationFailed; + retry, - final.
    #[test]
    fn ironic_failures_map_by_stage() {
        #[rustfmt::skip]
        let table: &[(&str, &str, &str, &str)] = &[
            // failure          Call  BeforeClaim Deploying
            ("404",            "C-", "F+", "C+"),
            ("409 locked",     "C+", "F+", "C+"),
            ("409 associated", "C-", "F+", "C+"),
            ("409 state",      "C-", "F+", "C+"),
            ("503",            "C+", "F+", "C+"),
            ("400",            "C-", "F+", "C-"),
            ("401",            "C-", "F-", "C+"),
            ("406",            "C-", "F+", "C+"),
            ("500",            "C-", "F+", "C+"),
            ("transport",      "C+", "F+", "C+"),
            ("microversion",   "C-", "F+", "C+"),
            ("wait failed",    "C-", "F+", "C+"),
            ("wait timeout",   "C+", "F+", "C+"),
            ("tls",            "C-", "F-", "C+"),
            ("keystone",       "C-", "F-", "C+"),
            ("decode",         "C-", "F+", "C+"),
            ("too large",      "C-", "F+", "C+"),
            ("config",         "C-", "F-", "C+"),
        ];
        let samples = samples();
        assert_eq!(table.len(), samples.len(), "every sample has a row");
        for (name, e) in samples {
            let row = table
                .iter()
                .find(|r| r.0 == name)
                .unwrap_or_else(|| panic!("no row for {name}"));
            for (stage, want) in [
                (Stage::Call, row.1),
                (Stage::BeforeClaim, row.2),
                (Stage::Deploying, row.3),
            ] {
                let got = from_ironic(e.clone(), stage, "doing x");
                let kind = match got.kind {
                    ErrorKind::CloudError => 'C',
                    ErrorKind::VmCreationFailed => 'F',
                    other => panic!("{name} in {stage:?}: {other}"),
                };
                let retry = if got.ok_to_retry { '+' } else { '-' };
                assert_eq!(format!("{kind}{retry}"), want, "{name} in {stage:?}");
                assert!(got.message.starts_with("doing x: "), "{}", got.message);
            }
        }
    }

    /// The WebDAV and registry clients' failures: configuration is the CPI's (final), no
    /// answer or a 5xx may pass next time, a 4xx will not.
    #[test]
    fn http_failures_map_by_kind() {
        use ironic_cpi_http::HttpError;
        let status = |status| HttpError::Status {
            method: "PUT".into(),
            url: "u".into(),
            doing: "d".into(),
            status,
            body: String::new(),
            retry_after: None,
        };
        let transport = HttpError::Transport {
            method: "GET".into(),
            url: "u".into(),
            doing: "d".into(),
            kind: "timed out",
            attempts: 3,
            message: "m".into(),
            not_sent: false,
        };
        let ca = HttpError::CaFile {
            path: "p".into(),
            problem: "is empty".into(),
        };
        let build = HttpError::Build {
            message: "m".into(),
        };
        #[rustfmt::skip]
        let table: Vec<(HttpError, ErrorKind, bool)> = vec![
            (ca,          ErrorKind::CpiError,   false),
            (build,       ErrorKind::CpiError,   false),
            (transport,   ErrorKind::CloudError, true),
            (status(404), ErrorKind::CloudError, false),
            (status(409), ErrorKind::CloudError, false),
            (status(500), ErrorKind::CloudError, true),
            (status(503), ErrorKind::CloudError, true),
        ];
        for (e, kind, retry) in table {
            let text = e.to_string();
            let got = CpiError::from(e);
            assert_eq!((got.kind, got.ok_to_retry), (kind, retry), "{text}");
            assert_eq!(got.message, text);
            assert!(
                got.cause::<HttpError>().is_some(),
                "{text} keeps its source"
            );
        }
    }

    #[test]
    fn the_ironic_failure_stays_the_source() {
        let e = IronicError::BadRequest {
            message: "bad root_device".into(),
        };
        let got = from_ironic(e, Stage::Deploying, "deploying node n");
        assert!(matches!(
            got.cause::<IronicError>(),
            Some(IronicError::BadRequest { .. })
        ));
        let chain = std::error::Error::source(&got).map(|s| s.to_string());
        assert_eq!(
            chain.as_deref(),
            Some(got.message.trim_start_matches("deploying node n: "))
        );
        assert!(got
            .clone()
            .context("create_vm")
            .cause::<IronicError>()
            .is_some());
        assert!(CpiError::cloud("plain").cause::<IronicError>().is_none());
    }

    #[test]
    fn a_plain_question_mark_is_the_call_stage() {
        let e = IronicError::ServiceUnavailable {
            message: "busy".into(),
        };
        let via_from: CpiError = e.clone().into();
        assert_eq!(via_from, from_ironic(e, Stage::Call, ""));
    }
}
