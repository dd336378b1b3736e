//! Start Debian's nginx as a WebDAV server (the setup most Ironic installations use), as the
//! current user, with its own temp prefix for config, pid, logs and body temp files.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{free_port, ChildProcess, SpawnOptions};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const DAV_EXT_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

pub struct NginxLab {
    /// `http://127.0.0.1:PORT`, serving `root` at `/`.
    pub url: String,
    pub root: PathBuf,
    pub prefix: PathBuf,
    child: ChildProcess,
    _dir: tempfile::TempDir,
}

/// The nginx configuration: WebDAV on `root`, one process (`master_process off`) so that killing
/// the child leaves no workers behind. With `htpasswd`, set up as docs/server.md recommends for a
/// metadata repository: anonymous GET and HEAD of files only (no listings), everything else for
/// the users of that file.
pub fn config(
    prefix: &Path,
    root: &Path,
    port: u16,
    workers: u32,
    master: bool,
    htpasswd: Option<&Path>,
) -> String {
    let p = prefix.display();
    let master = if master { "on" } else { "off" };
    let access = match htpasswd {
        None => "autoindex on;".to_string(),
        Some(file) => format!(
            "autoindex off;\n            limit_except GET HEAD {{\n                \
             auth_basic \"dav\";\n                auth_basic_user_file {};\n            }}",
            file.display()
        ),
    };
    format!(
        r#"load_module {DAV_EXT_MODULE};
daemon off;
master_process {master};
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    client_max_body_size 0;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            {access}
        }}
    }}
}}
"#,
        root = root.display()
    )
}

impl NginxLab {
    /// nginx WebDAV on `root` without any authentication.
    pub fn start(root: &Path) -> Result<NginxLab, String> {
        Self::start_with(root, None)
    }

    /// nginx WebDAV on `root` where only `user` may write and list; anyone may GET a file.
    pub fn start_secured(root: &Path, user: (&str, &str)) -> Result<NginxLab, String> {
        Self::start_with(root, Some(user))
    }

    fn start_with(root: &Path, user: Option<(&str, &str)>) -> Result<NginxLab, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let root = root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", root.display()))?;
        let mut last = String::new();
        // The port is picked by binding port 0 and releasing it; another process may take it in
        // between, so try a few times.
        for _ in 0..5 {
            match Self::try_start(&root, user) {
                Ok(lab) => return Ok(lab),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(root: &Path, user: Option<(&str, &str)>) -> Result<NginxLab, String> {
        let dir = tempfile::Builder::new()
            .prefix("ironic-cpi-nginx-lab.")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let prefix = dir.path().to_path_buf();
        let port = free_port()?;
        let htpasswd = prefix.join("htpasswd");
        if let Some((u, pw)) = user {
            // nginx reads RFC 2307 schemes; {PLAIN} is fine for a throw-away test server.
            std::fs::write(&htpasswd, format!("{u}:{{PLAIN}}{pw}\n"))
                .map_err(|e| format!("cannot write {}: {e}", htpasswd.display()))?;
        }
        let conf = prefix.join("nginx.conf");
        let auth = user.map(|_| htpasswd.as_path());
        std::fs::write(&conf, config(&prefix, root, port, 1, false, auth))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf);
        let mut child = ChildProcess::spawn(
            "nginx",
            cmd,
            &prefix.join("stderr.log"),
            SpawnOptions {
                grace: Duration::from_secs(5),
                remove_dir: Some(prefix.clone()),
            },
        )?;
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            let failed = child.try_wait().is_some();
            if failed || start.elapsed() > Duration::from_secs(10) {
                drop(child);
                let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
                let err = std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
                return Err(format!("nginx did not start on port {port}:\n{err}{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(NginxLab {
            url: format!("http://127.0.0.1:{port}"),
            root: root.to_path_buf(),
            prefix,
            child,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}
