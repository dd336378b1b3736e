//! Real certificates for the agent's message bus, made with the openssl command: what the
//! director puts in `env.bosh.mbus.cert` of every create_vm (its NATS CA, and a certificate and
//! key for the agent signed by it). Agents refuse anything else at mbus setup ("Failed to load
//! Mbus CA cert"), so the lab and the tests never send placeholder PEMs.
//!
//! Keys are P-256: the agent (Go's crypto/tls) takes them like the director's RSA keys, and they
//! are made in milliseconds instead of seconds on a loaded machine.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// `{"ca", "certificate", "private_key"}` for `agent_id`, the certificate also valid as a
/// server certificate for `ip` (what `bosh create-env`'s agent serves its HTTPS mbus with).
/// The files are written to `dir`, which must exist.
pub fn mbus_cert(dir: &Path, agent_id: &str, ip: &str) -> Result<Value, String> {
    let path = |name: &str| dir.join(name);
    openssl(
        Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-subj", "/CN=default.nats-ca.bosh-internal"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(path("ca.key"))
            .arg("-out")
            .arg(path("ca.pem")),
    )?;
    let name = format!("{agent_id}.agent.bosh-internal");
    openssl(
        Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "2"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-CA")
            .arg(path("ca.pem"))
            .arg("-CAkey")
            .arg(path("ca.key"))
            .args(["-subj", &format!("/CN={name}")])
            .args(["-addext", &format!("subjectAltName=IP:{ip},DNS:{name}")])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth,clientAuth"])
            .arg("-keyout")
            .arg(path("agent.key"))
            .arg("-out")
            .arg(path("agent.pem")),
    )?;
    let read = |name: &str| {
        std::fs::read_to_string(path(name))
            .map_err(|e| format!("cannot read {}: {e}", path(name).display()))
    };
    Ok(json!({
        "ca": read("ca.pem")?,
        "certificate": read("agent.pem")?,
        "private_key": read("agent.key")?,
    }))
}

fn openssl(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
