//! A certificate authority made for one test run, and a server certificate it signed, with the
//! openssl command: the chain an operator gives the CPI through `ca_cert_file` (the CA, not the
//! server's own certificate).

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files in one directory.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate: what a client trusts.
    pub ca_cert: PathBuf,
    /// The server certificate, signed by the CA, valid for the names given to [`TestCa::create`].
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    /// A fresh CA in `dir` and a server certificate for `dns_names` only (no IP address): a
    /// client that reaches the server by any other name must refuse it.
    pub fn create(dir: &Path, dns_names: &[&str]) -> Result<TestCa, String> {
        let ca_key = dir.join("ca.key");
        let ca_cert = dir.join("ca.pem");
        let server_key = dir.join("server.key");
        let server_csr = dir.join("server.csr");
        let server_cert = dir.join("server.pem");
        let ext = dir.join("server.ext");
        // P-256 keys: quick to make, and both rustls and Python's ssl take them.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2"])
                .args(ec)
                .args(["-subj", "/CN=ironic-cpi test CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca_cert),
        )?;
        let first = dns_names.first().copied().unwrap_or("localhost");
        openssl(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-subj", &format!("/CN={first}")])
                .arg("-keyout")
                .arg(&server_key)
                .arg("-out")
                .arg(&server_csr),
        )?;
        let sans: Vec<String> = dns_names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", ext.display()))?;
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(&server_csr)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&server_cert),
        )?;
        Ok(TestCa {
            ca_cert,
            server_cert,
            server_key,
        })
    }
}

fn openssl(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {:?} failed: {}",
            cmd.get_args().next().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_chains_to_the_ca_and_names_only_its_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::create(dir.path(), &["localhost"]).unwrap();
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca.ca_cert)
            .arg(&ca.server_cert)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let check = |name_flag: &str, name: &str| {
            Command::new("openssl")
                .args(["x509", "-noout", name_flag, name, "-in"])
                .arg(&ca.server_cert)
                .output()
                .unwrap()
        };
        let text = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text(check("-checkhost", "localhost")).contains("does match"));
        assert!(text(check("-checkhost", "ironic.example")).contains("does NOT match"));
        assert!(text(check("-checkip", "127.0.0.1")).contains("does NOT match"));
    }
}
