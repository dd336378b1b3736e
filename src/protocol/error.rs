//! The error family the BOSH director understands.
//!
//! Every failure of a CPI call becomes one of these before it reaches stdout: the director maps any
//! other `type` to `UnknownError` and fails the task, so nothing else may escape.

use std::fmt;

/// The `Bosh::Clouds::*` error types the director knows (bosh: `external_cpi.rb`
/// `KNOWN_RPC_ERRORS`, classes in `src/bosh-director/lib/clouds/errors.rb`).
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

/// A failure as the response carries it: type, a message a person can act on, and whether the
/// director may simply call again. The protocol's own failures (a bad envelope, bad arguments)
/// are `CpiError`s; a CPI maps its own failures to this at the action boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub ok_to_retry: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            ok_to_retry: false,
        }
    }

    /// Bad input: malformed request, wrong argument types.
    pub fn cpi(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CpiError, message)
    }

    pub fn retryable(mut self, ok_to_retry: bool) -> Self {
        self.ok_to_retry = ok_to_retry;
        self
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_bosh_type() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_bosh_type(kind.bosh_type()), Some(kind));
            assert!(kind.bosh_type().starts_with("Bosh::Clouds::"));
        }
        assert_eq!(ErrorKind::from_bosh_type("Bosh::Clouds::Nope"), None);
    }
}
