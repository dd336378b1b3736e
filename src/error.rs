//! The error family the BOSH director understands.
//!
//! Every failure of a CPI call becomes one of these before it reaches stdout: the director maps any
//! other `type` to `UnknownError` and fails the task, so nothing else may escape.

use std::fmt;

/// The `Bosh::Clouds::*` error types the director knows (contract doc, section 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    CpiError,
    NotImplemented,
    NotSupported,
    CloudError,
    VmNotFound,
    VmCreationFailed,
    DiskNotFound,
    DiskNotAttached,
    NoDiskSpace,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::CpiError,
        ErrorKind::NotImplemented,
        ErrorKind::NotSupported,
        ErrorKind::CloudError,
        ErrorKind::VmNotFound,
        ErrorKind::VmCreationFailed,
        ErrorKind::DiskNotFound,
        ErrorKind::DiskNotAttached,
        ErrorKind::NoDiskSpace,
    ];

    /// The exact string the director matches on.
    pub fn bosh_type(self) -> &'static str {
        match self {
            ErrorKind::CpiError => "Bosh::Clouds::CpiError",
            ErrorKind::NotImplemented => "Bosh::Clouds::NotImplemented",
            ErrorKind::NotSupported => "Bosh::Clouds::NotSupported",
            ErrorKind::CloudError => "Bosh::Clouds::CloudError",
            ErrorKind::VmNotFound => "Bosh::Clouds::VMNotFound",
            ErrorKind::VmCreationFailed => "Bosh::Clouds::VMCreationFailed",
            ErrorKind::DiskNotFound => "Bosh::Clouds::DiskNotFound",
            ErrorKind::DiskNotAttached => "Bosh::Clouds::DiskNotAttached",
            ErrorKind::NoDiskSpace => "Bosh::Clouds::NoDiskSpace",
        }
    }

    pub fn from_bosh_type(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.bosh_type() == s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.bosh_type())
    }
}

/// A failure on its way to the director: type, a message a person can act on, and whether the
/// director may simply call again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CpiError {
    pub kind: ErrorKind,
    pub message: String,
    pub ok_to_retry: bool,
}

impl CpiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CpiError {
            kind,
            message: message.into(),
            ok_to_retry: false,
        }
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

/// Ironic errors reach the director as `CloudError`; the transient ones may be retried by it.
/// Callers that need `VMNotFound` or `VMCreationFailed` map the error themselves.
impl From<crate::ironic::IronicError> for CpiError {
    fn from(e: crate::ironic::IronicError) -> CpiError {
        let retry = e.is_transient() || matches!(e, crate::ironic::IronicError::WaitTimeout { .. });
        CpiError::cloud(e.to_string()).retryable(retry)
    }
}
