//! The companion server's configuration: one JSON file (`ironic_cpi_server -c server.json`).
//!
//! Every key and its default is documented in `docs/server.md`; keep the two in step. Unknown keys
//! are refused so that a typo is reported instead of silently falling back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use ironic_cpi_common::{Seconds, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to listen on; port 0 picks a free port (the log says which).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory that holds every mount and the registry documents.
    pub root: PathBuf,
    #[serde(default = "default_mounts")]
    pub mounts: Vec<MountConfig>,
    #[serde(default)]
    pub registry: RegistryServerConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Largest request body for a PUT (stemcell images are several GB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Largest body of other WebDAV requests (PROPFIND, PROPPATCH, LOCK: small XML documents).
    #[serde(default = "default_max_xml_body")]
    pub max_xml_body_bytes: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: f64,
    /// Runtime worker threads; 0 = one per CPU.
    #[serde(default)]
    pub worker_threads: usize,
    /// One line per request on stderr.
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// Seconds a client has to send a complete request head, counted from the connection's start
    /// or the end of the previous response (so also the idle time allowed between requests).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_seconds: Seconds,
    /// Longest wait for the next bytes of a request body (see `min_bytes_per_second` too).
    #[serde(default = "default_transfer_timeout")]
    pub body_read_timeout_seconds: Seconds,
    /// Longest a response may wait for the client to take more bytes.
    #[serde(default = "default_transfer_timeout")]
    pub response_write_timeout_seconds: Seconds,
    /// Slowest transfer: the time a body or response waits for its client is an allowance of the
    /// timeout, refilled by one second per this many bytes moved and never above the timeout, so
    /// clients that trickle are cut. 0 turns the rate check off.
    #[serde(default = "default_min_rate")]
    pub min_bytes_per_second: u64,
    /// Connections open at once; at the cap, the one waiting longest for a request head is closed
    /// to make room, and when all are busy new ones get 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Anonymous requests served at once (503 beyond), so that they cannot take the room of
    /// authenticated clients and health checks.
    #[serde(default = "default_max_anonymous")]
    pub max_anonymous_requests: usize,
    /// Memory all file downloads together may hold in read buffers; a download waits for its share.
    #[serde(default = "default_download_buffer")]
    pub download_buffer_bytes: u64,
    /// Kernel send buffer of each connection (SO_SNDBUF; the kernel doubles it); 0 leaves it to
    /// the kernel's autotuning, which lets a client that does not read hold megabytes of kernel
    /// memory.
    #[serde(default = "default_send_buffer")]
    pub send_buffer_bytes: u64,
    /// Longest life of a WebDAV lock (on mounts with `locks`), whatever the client asks.
    #[serde(default = "default_max_lock")]
    pub max_lock_seconds: Seconds,
    /// Files up to this size are kept in memory after the first GET (validated by a stat on
    /// every request and dropped on every write); 0 disables the cache.
    #[serde(default = "default_cache_file_max")]
    pub cache_file_max_bytes: u64,
    /// Total bytes the small-file cache may hold.
    #[serde(default = "default_cache_total")]
    pub cache_total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// URL prefix, e.g. `/images`.
    pub prefix: String,
    /// Directory under `root` (relative), created at startup.
    pub dir: String,
    /// GET, HEAD, PROPFIND and OPTIONS without credentials (Ironic conductors download images
    /// anonymously).
    #[serde(default)]
    pub anonymous_read: bool,
    /// Everything without credentials. For throw-away test setups only.
    #[serde(default)]
    pub anonymous_write: bool,
    /// Answer WebDAV LOCK and UNLOCK (interactive clients want them). A lock binds only the user
    /// who took it and lives at most `max_lock_seconds`.
    #[serde(default)]
    pub locks: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryServerConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// URL prefix; the API is at `<prefix>/instances/<id>/settings`.
    #[serde(default = "default_registry_prefix")]
    pub prefix: String,
    /// Directory under `root` holding `<id>.json`.
    #[serde(default = "default_registry_dir")]
    pub dir: String,
    /// GET without credentials (agents read their settings with the endpoint's credentials, if any).
    #[serde(default)]
    pub anonymous_read: bool,
    /// Largest settings document a PUT may carry.
    #[serde(default = "default_settings_max")]
    pub max_settings_bytes: u64,
}

impl Default for RegistryServerConfig {
    fn default() -> Self {
        RegistryServerConfig {
            enabled: true,
            prefix: default_registry_prefix(),
            dir: default_registry_dir(),
            anonymous_read: false,
            max_settings_bytes: default_settings_max(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Read,
    Write,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    pub role: Role,
    /// bcrypt hash (`$2b$...`), e.g. from `htpasswd -nbB user pw` or `mkpasswd -m bcrypt`.
    #[serde(default)]
    pub password_bcrypt: Option<Secret>,
    /// Plain password, for tests and throw-away setups.
    #[serde(default)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

fn default_listen() -> String {
    "0.0.0.0:25780".into()
}
fn default_mounts() -> Vec<MountConfig> {
    vec![
        MountConfig {
            prefix: "/images".into(),
            dir: "images".into(),
            anonymous_read: false,
            anonymous_write: false,
            locks: false,
        },
        MountConfig {
            prefix: "/metadata".into(),
            dir: "metadata".into(),
            anonymous_read: false,
            anonymous_write: false,
            locks: false,
        },
    ]
}
fn default_registry_prefix() -> String {
    "/registry".into()
}
fn default_registry_dir() -> String {
    "registry".into()
}
fn default_settings_max() -> u64 {
    1024 * 1024
}
fn default_max_body() -> u64 {
    64 * 1024 * 1024 * 1024
}
fn default_max_xml_body() -> u64 {
    1024 * 1024
}
fn default_grace() -> f64 {
    30.0
}
fn default_true() -> bool {
    true
}
fn default_header_timeout() -> Seconds {
    Seconds::from_secs(30)
}
fn default_transfer_timeout() -> Seconds {
    Seconds::from_secs(30)
}
fn default_min_rate() -> u64 {
    1024
}
fn default_max_connections() -> usize {
    4096
}
fn default_max_anonymous() -> usize {
    512
}
fn default_download_buffer() -> u64 {
    8 * 1024 * 1024
}
fn default_send_buffer() -> u64 {
    256 * 1024
}
fn default_max_lock() -> Seconds {
    Seconds::from_secs(60)
}
fn default_cache_file_max() -> u64 {
    64 * 1024
}
fn default_cache_total() -> u64 {
    32 * 1024 * 1024
}

/// A configuration error; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "config file {} is not valid JSON: {e}",
                path.display()
            ))
        })?;
        ServerConfig::from_value(value)
            .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
    }

    pub fn from_value(value: Value) -> Result<ServerConfig, ConfigError> {
        if !value.is_object() {
            return Err(ConfigError("the config must be a JSON object".into()));
        }
        let config: ServerConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            // serde quotes the value it refused, and a password may be that value.
            let inner = ironic_cpi_common::redact::serde_message(&e.into_inner().to_string());
            if path == "." {
                ConfigError(inner)
            } else {
                ConfigError(format!("key '{path}': {inner}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            ConfigError(format!(
                "key 'listen': '{}' is not host:port ({e})",
                self.listen
            ))
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("key '{key}': {why}")));
        self.listen_addr()?;
        if !self.root.is_absolute() {
            return bad("root", "must be an absolute path");
        }
        let mut prefixes: Vec<&str> = Vec::new();
        for (i, m) in self.mounts.iter().enumerate() {
            check_prefix(&format!("mounts[{i}].prefix"), &m.prefix)?;
            check_dir(&format!("mounts[{i}].dir"), &m.dir)?;
            prefixes.push(&m.prefix);
        }
        if self.registry.enabled {
            check_prefix("registry.prefix", &self.registry.prefix)?;
            check_dir("registry.dir", &self.registry.dir)?;
            prefixes.push(&self.registry.prefix);
            if self.registry.max_settings_bytes == 0 {
                return bad("registry.max_settings_bytes", "must be at least 1");
            }
        }
        for (i, a) in prefixes.iter().enumerate() {
            for b in &prefixes[i + 1..] {
                if a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/")) {
                    return bad("mounts", &format!("prefixes '{a}' and '{b}' overlap"));
                }
            }
            if *a == "/healthz" {
                return bad("mounts", "'/healthz' is reserved for the health check");
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if u.username.is_empty() || u.username.contains(':') {
                return bad(
                    &format!("{key}.username"),
                    "must be non-empty and have no ':'",
                );
            }
            if names.contains(&u.username.as_str()) {
                return bad(
                    &format!("{key}.username"),
                    &format!("'{}' appears twice", u.username),
                );
            }
            names.push(&u.username);
            match (&u.password_bcrypt, &u.password) {
                (Some(_), Some(_)) | (None, None) => {
                    return bad(
                        &key,
                        "needs exactly one of 'password_bcrypt' and 'password'",
                    );
                }
                (Some(hash), None) => {
                    // Verifying a dummy password checks that the hash parses, without logging it.
                    if bcrypt::verify("", hash.expose()).is_err() {
                        return bad(
                            &format!("{key}.password_bcrypt"),
                            "is not a bcrypt hash ($2a$, $2b$ or $2y$)",
                        );
                    }
                }
                (None, Some(_)) => {}
            }
        }
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes", "must be at least 1");
        }
        if self.max_xml_body_bytes == 0 {
            return bad("max_xml_body_bytes", "must be at least 1");
        }
        if !(self.shutdown_grace_seconds.is_finite() && self.shutdown_grace_seconds >= 0.0) {
            return bad("shutdown_grace_seconds", "must be a number >= 0");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_anonymous_requests > self.max_connections {
            return bad(
                "max_anonymous_requests",
                "must not be above max_connections (room is kept for authenticated clients)",
            );
        }
        if self.download_buffer_bytes < 64 * 1024 {
            return bad("download_buffer_bytes", "must be at least 65536");
        }
        if self.send_buffer_bytes > i32::MAX as u64 / 2 {
            return bad("send_buffer_bytes", "must be at most 1073741823");
        }
        if self.worker_threads > 1024 {
            return bad("worker_threads", "must be at most 1024");
        }
        if let Some(tls) = &self.tls {
            for (key, p) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if !p.is_file() {
                    return bad(key, &format!("{} is not a readable file", p.display()));
                }
            }
        }
        Ok(())
    }
}

fn check_prefix(key: &str, p: &str) -> Result<(), ConfigError> {
    let ok = p.len() > 1
        && p.starts_with('/')
        && !p.ends_with('/')
        && p[1..].split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "key '{key}': '{p}' must look like '/images' (absolute, no trailing '/', letters, digits, - _ . ~)"
        )))
    }
}

fn check_dir(key: &str, d: &str) -> Result<(), ConfigError> {
    let ok = !d.is_empty()
        && !d.starts_with('/')
        && d.split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with(".ironic-cpi"));
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "key '{key}': '{d}' must be a relative directory under root, without '.' or '..'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ServerConfig::from_value(json!({"root": "/srv/x"})).unwrap();
        assert_eq!(c.listen, "0.0.0.0:25780");
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(c.mounts[0].prefix, "/images");
        assert_eq!(c.mounts[1].prefix, "/metadata");
        assert_eq!(c.registry.prefix, "/registry");
        assert!(c.registry.enabled && !c.registry.anonymous_read);
        assert!(c.access_log);
        assert_eq!(c.max_xml_body_bytes, 1024 * 1024);
        assert_eq!((c.max_connections, c.max_anonymous_requests), (4096, 512));
        assert_eq!(c.download_buffer_bytes, 8 * 1024 * 1024);
        assert!(c.mounts.iter().all(|m| !m.locks));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({"root": "rel"}), "root"),
            (json!({}), "root"),
            (json!({"root": "/x", "listen": "nope"}), "listen"),
            (
                json!({"root": "/x", "mounts": [{"prefix": "images", "dir": "i"}]}),
                "mounts[0].prefix",
            ),
            (
                json!({"root": "/x", "mounts": [{"prefix": "/i", "dir": "../up"}]}),
                "mounts[0].dir",
            ),
            (
                json!({"root": "/x", "mounts": [{"prefix": "/registry", "dir": "r"}]}),
                "mounts",
            ),
            (
                json!({"root": "/x", "users": [{"username": "u", "role": "read"}]}),
                "users[0]",
            ),
            (
                json!({"root": "/x", "users": [{"username": "u", "role": "admin", "password": "p"}]}),
                "users[0].role",
            ),
            (
                json!({"root": "/x", "users": [{"username": "u", "role": "read", "password_bcrypt": "plain"}]}),
                "users[0].password_bcrypt",
            ),
            (
                json!({"root": "/x", "tls": {"cert_file": "/nonexistent", "key_file": "/nonexistent"}}),
                "tls.cert_file",
            ),
            (json!({"root": "/x", "rooot": 1}), "rooot"),
            (
                json!({"root": "/x", "registry": {"max_settings_bytes": 0}}),
                "registry.max_settings_bytes",
            ),
            (
                json!({"root": "/x", "max_connections": 0}),
                "max_connections",
            ),
            (
                json!({"root": "/x", "max_connections": 10, "max_anonymous_requests": 11}),
                "max_anonymous_requests",
            ),
            (
                json!({"root": "/x", "body_read_timeout_seconds": 0}),
                "body_read_timeout_seconds",
            ),
            (
                json!({"root": "/x", "response_write_timeout_seconds": 1e300}),
                "response_write_timeout_seconds",
            ),
            (
                json!({"root": "/x", "download_buffer_bytes": 1000}),
                "download_buffer_bytes",
            ),
            (
                json!({"root": "/x", "max_lock_seconds": -1}),
                "max_lock_seconds",
            ),
        ];
        for (value, key) in cases {
            let e = ServerConfig::from_value(value.clone()).unwrap_err();
            assert!(e.0.contains(key), "{value}: {e}");
        }
    }

    #[test]
    fn errors_do_not_show_passwords() {
        let v = json!({"root": "/x", "users": [{"username": "u", "role": "read", "password_bcrypt": "hunter2secret"}]});
        let e = ServerConfig::from_value(v).unwrap_err();
        assert!(!e.0.contains("hunter2secret"), "{e}");
        // A password YAML read as a number.
        let v = json!({"root": "/x", "users": [{"username": "u", "role": "read", "password": 8675309123u64}]});
        let e = ServerConfig::from_value(v).unwrap_err();
        assert!(
            e.0.contains("users[0].password") && !e.0.contains("8675309123"),
            "{e}"
        );
    }
}
