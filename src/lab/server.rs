//! Start the real companion server (`ironic_cpi_server`) for tests and benchmarks.
//!
//! The server runs on a free loopback port (it binds port 0 and logs the address), with its storage
//! root, config and log in a temp directory. It is killed when the `ServerLab` is dropped, and a
//! watchdog kills it when the test process dies without dropping it (a `OnceLock` static is never
//! dropped).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{ChildProcess, SpawnOptions};
use ironic_cpi_server::Role;

/// Users every lab server has (plain passwords: it is a test setup).
pub const WRITE_USER: (&str, &str) = ("writer", "writer-pw");
pub const READ_USER: (&str, &str) = ("reader", "reader-pw");

pub struct ServerOpts {
    /// Storage root; a fresh temp directory when `None`. Give the root of a previous lab to
    /// restart "the same" server.
    pub root: Option<PathBuf>,
    /// `anonymous_read` for every mount (the registry keeps its default: per-VM reads).
    pub anonymous_read: bool,
    /// Keys laid over the generated config (top level, replaced whole).
    pub extra: Value,
    /// The server binary; found next to the test binary when `None`.
    pub binary: Option<PathBuf>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            root: None,
            anonymous_read: false,
            extra: json!({}),
            binary: None,
        }
    }
}

pub struct ServerLab {
    /// `http(s)://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    /// Storage root directory.
    pub root: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: ChildProcess,
    _dir: tempfile::TempDir,
}

impl ServerLab {
    pub fn start(opts: ServerOpts) -> Result<ServerLab, String> {
        let dir = tempfile::Builder::new()
            .prefix("ironic-cpi-server-lab.")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let root = opts.root.clone().unwrap_or_else(|| dir.path().join("root"));
        let users = [(WRITE_USER, Role::Write), (READ_USER, Role::Read)]
            .iter()
            .map(|((u, p), role)| json!({"username": u, "password": p, "role": role}))
            .collect::<Vec<_>>();
        let mount = |prefix: &str, d: &str| json!({"prefix": prefix, "dir": d, "anonymous_read": opts.anonymous_read});
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "root": root,
            "users": users,
            "mounts": [mount("/images", "images"), mount("/metadata", "metadata")],
            "shutdown_grace_seconds": 10,
            "worker_threads": 2,
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), opts.extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let config_path = dir.path().join("server.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let binary = match opts.binary {
            Some(b) => b,
            None => crate::binaries::server()?,
        };
        let log_path = dir.path().join("server.log");
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&config_path);
        let child = ChildProcess::spawn(
            "ironic_cpi_server",
            cmd,
            &log_path,
            SpawnOptions {
                grace: Duration::from_secs(5),
                remove_dir: Some(dir.path().to_path_buf()),
            },
        )?;
        let mut lab = ServerLab {
            url: String::new(),
            root,
            config_path,
            log_path,
            child,
            _dir: dir,
        };
        lab.url = lab.wait_listening(Duration::from_secs(30))?;
        Ok(lab)
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let log = self.log();
            if let Some(i) = log.find("listening on ") {
                let rest = &log[i + "listening on ".len()..];
                let url = rest.split_whitespace().next().unwrap_or("").to_string();
                return Ok(url);
            }
            if let Some(status) = self.child.try_wait() {
                return Err(format!(
                    "ironic_cpi_server exited ({status}) before listening; log:\n{log}"
                ));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "ironic_cpi_server did not listen within {limit:?}; log:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid())
    }

    /// Send a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) -> Result<(), String> {
        send_signal(self.pid(), name)
    }

    /// Wait for the server to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Join `path` (relative, `/`-separated) to the URL.
    pub fn at(&self, path: &str) -> String {
        format!("{}/{}", self.url, path.trim_start_matches('/'))
    }
}

/// Send a signal by name (`TERM`, `KILL`, `STOP`, ...) to one process.
pub fn send_signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid} failed ({status})"))
    }
}

/// VmHWM of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Send `request` as-is over a new TCP connection to the `http://host:port` of `url` and read the
/// answer until the server closes (send `Connection: close`). For requests that HTTP clients
/// would "fix" (dot segments, encoded slashes, odd targets).
pub fn raw_http(url: &str, request: &[u8]) -> Result<RawResponse, String> {
    use std::io::Write;
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {:?}", String::from_utf8_lossy(&buf)))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(RawResponse {
        status,
        head,
        body: buf[split + 4..].to_vec(),
    })
}

/// A self-signed server certificate for 127.0.0.1 and localhost (`cert.pem`, `key.pem` in `dir`),
/// made with the openssl command. It is an end-entity certificate: webpki refuses a CA
/// certificate as a server's, so it doubles as its own trust anchor for clients.
pub fn self_signed_cert(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((cert, key))
}
