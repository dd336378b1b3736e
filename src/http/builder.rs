//! The blocking client every caller builds: rustls (reqwest's `rustls-tls`), the platform's
//! roots plus an optional CA bundle, connect and request timeouts, our user agent.

use std::time::Duration;

use reqwest::blocking::Client;

use crate::{describe, HttpError};

const USER_AGENT: &str = concat!("ironic_cpi/", env!("CARGO_PKG_VERSION"));

/// For services whose configuration has no connect timeout (WebDAV, the registry).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct ClientOptions<'a> {
    /// A PEM bundle of CAs to trust besides the built-in roots; empty means none.
    pub ca_cert_file: Option<&'a str>,
    pub connect_timeout: Duration,
    /// For a whole exchange, the body included.
    pub timeout: Duration,
}

/// Build the client. No network I/O happens here.
pub fn client(o: &ClientOptions) -> Result<Client, HttpError> {
    let mut b = Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(o.connect_timeout)
        .timeout(o.timeout);
    if let Some(path) = o.ca_cert_file.filter(|p| !p.is_empty()) {
        let ca = |problem: String| HttpError::CaFile {
            path: path.to_string(),
            problem,
        };
        let pem = std::fs::read(path).map_err(|e| ca(format!("cannot be read: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ca(format!("is not a PEM bundle: {e}")))?;
        if certs.is_empty() {
            return Err(ca("holds no PEM certificate".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| HttpError::Build {
        message: describe(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ca: Option<&str>) -> ClientOptions<'_> {
        ClientOptions {
            ca_cert_file: ca,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert!(client(&opts(None)).is_ok());
        assert!(client(&opts(Some(""))).is_ok());
        let e = client(&opts(Some("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.to_string()
                .contains("ca_cert_file /nonexistent/ca.pem cannot be read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("ironic_cpi_http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = client(&opts(not_pem.to_str())).unwrap_err();
        assert!(matches!(e, HttpError::CaFile { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
