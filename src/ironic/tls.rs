//! Telling a failed TLS handshake from a network failure: a certificate that is not trusted, not
//! for the host name or expired stays so, so it is reported at once with what to change, never
//! retried like a refused connection.

use std::error::Error as StdError;

use rustls::{CertificateError, Error as TlsError};

/// What went wrong in the handshake, for an operator, if `e` is a TLS failure; `host` is the
/// name the client asked the certificate to carry.
pub fn failure(e: &reqwest::Error, host: &str) -> Option<String> {
    find(e).map(|t| describe(t, host))
}

/// rustls' error among `e`'s causes. hyper-rustls wraps it in an io::Error inside another
/// io::Error, and `io::Error::source()` skips the error it wraps: so look inside those too.
fn find<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a TlsError> {
    if let Some(t) = e.downcast_ref::<TlsError>() {
        return Some(t);
    }
    let wrapped = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| find(inner));
    wrapped.or_else(|| e.source().and_then(find))
}

fn describe(e: &TlsError, host: &str) -> String {
    match e {
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the certificate of {host} is not signed by a trusted CA ({e}); set \
             ironic.ca_cert_file to the PEM file of the CA that signed it"
        ),
        TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the certificate is not valid for the host name {host} ({e}); reach the server by \
             a name its certificate carries"
        ),
        TlsError::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("the certificate of {host} has expired ({e})"),
        other => format!("the TLS handshake with {host} failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_handshake_error_inside_nested_io_errors() {
        let tls = TlsError::InvalidCertificate(CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        assert!(matches!(
            find(&outer),
            Some(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(find(&plain).is_none());
    }

    #[test]
    fn messages_say_what_to_change() {
        let unknown = describe(
            &TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
            "ironic.example",
        );
        assert!(unknown.contains("ironic.ca_cert_file") && unknown.contains("ironic.example"));
        let name = describe(
            &TlsError::InvalidCertificate(CertificateError::NotValidForName),
            "10.0.0.5",
        );
        assert!(
            name.contains("not valid for the host name 10.0.0.5"),
            "{name}"
        );
    }
}
