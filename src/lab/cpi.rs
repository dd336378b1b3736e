//! The whole lab: the real Ironic, the companion server, a CPI config pointing at both, and the
//! `ironic_cpi` binary called exactly as the director calls it (one process per call, JSON on
//! stdin). Used by the integration tests and by the lab command.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ironic::{IronicLab, IronicLabOptions};
use crate::server::{ServerLab, ServerOpts, WRITE_USER};
use ironic_cpi::config::Config;
use ironic_cpi::ironic::{IronicClient, IronicError};

pub struct CpiLabOptions {
    pub ironic: IronicLabOptions,
    /// Configure the companion server's registry in the CPI config.
    pub registry: bool,
    /// Publish every config drive to the metadata repository (tests read them back).
    pub publish_configdrive: bool,
    /// The `ironic_cpi` binary to run.
    pub cpi_binary: PathBuf,
    /// The `ironic_cpi_server` binary; found next to the CPI binary when `None`.
    pub server_binary: Option<PathBuf>,
}

pub struct CpiLab {
    pub ironic: IronicLab,
    pub server: ServerLab,
    pub config: Config,
    pub config_path: PathBuf,
    cpi_binary: PathBuf,
    _dir: tempfile::TempDir,
}

/// One CPI call as the director sees it.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub response: Value,
    pub stderr: String,
    pub stdout: String,
    pub elapsed: Duration,
}

impl CallOutcome {
    pub fn result(&self) -> &Value {
        &self.response["result"]
    }

    pub fn error_type(&self) -> Option<&str> {
        self.response["error"]["type"].as_str()
    }

    /// The result, or a panic message with the whole exchange (for tests).
    pub fn ok(&self) -> &Value {
        assert!(
            self.response["error"].is_null(),
            "CPI call failed: {}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.result()
    }
}

impl CpiLab {
    pub fn start(opts: CpiLabOptions) -> Result<CpiLab, String> {
        let dir = tempfile::Builder::new()
            .prefix("ironic-cpi-lab.")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let server_binary = opts.server_binary.clone().or_else(|| {
            let sibling = opts.cpi_binary.with_file_name("ironic_cpi_server");
            sibling.is_file().then_some(sibling)
        });
        let server = ServerLab::start(ServerOpts {
            binary: server_binary,
            // Ironic's conductors download images without credentials, as in most installations.
            anonymous_read: true,
            ..Default::default()
        })?;
        let ironic = IronicLab::start(opts.ironic)?;

        let mut config = ironic.config_doc();
        let repo = |path: &str| {
            json!({
                "url": format!("{}/{path}", server.url),
                "username": WRITE_USER.0,
                "password": WRITE_USER.1,
                "timeout": 60,
            })
        };
        config["stemcell_repository"] = repo("images");
        config["metadata_repository"] = repo("metadata");
        config["agent"] = json!({
            "mbus": "nats://nats:nats-password@10.0.0.6:4222",
            "ntp": ["0.pool.ntp.org"],
            "blobstore": {"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250"}},
        });
        if opts.registry {
            config["registry"] = json!({
                "endpoint": format!("{}/registry", server.url),
                "username": WRITE_USER.0,
                "password": WRITE_USER.1,
            });
        }
        config["defaults"]["publish_configdrive"] = json!(opts.publish_configdrive);
        let config_path = dir.path().join("cpi.json");
        std::fs::write(
            &config_path,
            serde_json::to_string_pretty(&config).expect("config serialises"),
        )
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let config = Config::from_value(config).map_err(|e| e.message)?;
        Ok(CpiLab {
            ironic,
            server,
            config,
            config_path,
            cpi_binary: opts.cpi_binary,
            _dir: dir,
        })
    }

    pub fn client(&self) -> Result<IronicClient, IronicError> {
        IronicClient::new(&self.config.ironic)
    }

    /// Run `ironic_cpi -c CONFIG` with one request, as the director does.
    pub fn call(
        &self,
        method: &str,
        arguments: Value,
        api_version: u32,
        stemcell_api_version: Option<u32>,
    ) -> CallOutcome {
        self.call_with_config(
            &self.config_path,
            method,
            arguments,
            api_version,
            stemcell_api_version,
        )
    }

    /// [`CpiLab::call`] with another config file (e.g. one whose Ironic URL is a fault proxy).
    pub fn call_with_config(
        &self,
        config_path: &std::path::Path,
        method: &str,
        arguments: Value,
        api_version: u32,
        stemcell_api_version: Option<u32>,
    ) -> CallOutcome {
        let mut context = json!({"director_uuid": "lab-director", "request_id": "cpi-lab"});
        if let Some(v) = stemcell_api_version {
            context["vm"] = json!({"stemcell": {"api_version": v}});
        }
        self.call_raw_with_config(
            config_path,
            &json!({
                "method": method,
                "arguments": arguments,
                "context": context,
                "api_version": api_version,
            }),
        )
    }

    pub fn call_raw(&self, request: &Value) -> CallOutcome {
        self.call_raw_with_config(&self.config_path, request)
    }

    pub fn call_raw_with_config(
        &self,
        config_path: &std::path::Path,
        request: &Value,
    ) -> CallOutcome {
        self.spawn_raw(config_path, request).wait()
    }

    /// Start a CPI call without waiting for it, to kill it midway as a director restart or an
    /// OOM kill would.
    pub fn spawn_call(
        &self,
        config_path: &std::path::Path,
        method: &str,
        arguments: Value,
        api_version: u32,
        stemcell_api_version: Option<u32>,
    ) -> RunningCall {
        let mut context = json!({"director_uuid": "lab-director", "request_id": "cpi-lab"});
        if let Some(v) = stemcell_api_version {
            context["vm"] = json!({"stemcell": {"api_version": v}});
        }
        self.spawn_raw(
            config_path,
            &json!({
                "method": method,
                "arguments": arguments,
                "context": context,
                "api_version": api_version,
            }),
        )
    }

    fn spawn_raw(&self, config_path: &std::path::Path, request: &Value) -> RunningCall {
        let started = Instant::now();
        let mut child = Command::new(&self.cpi_binary)
            .arg("-c")
            .arg(config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.cpi_binary.display()));
        let input = request.to_string();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        RunningCall {
            child,
            writer,
            started,
        }
    }
}

/// A CPI process started by [`CpiLab::spawn_call`].
pub struct RunningCall {
    child: std::process::Child,
    writer: std::thread::JoinHandle<()>,
    started: Instant,
}

impl RunningCall {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended.
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, as the kernel's OOM killer or a host crash ends a process: no cleanup runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.writer.join();
    }

    /// Wait for the response, as the director does.
    pub fn wait(self) -> CallOutcome {
        let out = self.child.wait_with_output().expect("wait for ironic_cpi");
        let _ = self.writer.join();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let response = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("ironic_cpi printed no JSON response ({e}): {stdout}\nstderr:\n{stderr}")
        });
        assert!(
            out.status.success(),
            "ironic_cpi exited with {:?}",
            out.status
        );
        CallOutcome {
            response,
            stderr,
            stdout,
            elapsed: self.started.elapsed(),
        }
    }
}

/// A stemcell-shaped image tarball (gzipped tar holding `root.img`) of `size` pseudo-random bytes.
pub fn make_stemcell_image(
    dir: &std::path::Path,
    size: usize,
    qcow2: bool,
) -> std::io::Result<PathBuf> {
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    if qcow2 && size >= 4 {
        data[..4].copy_from_slice(b"QFI\xfb");
    }
    let path = dir.join("image");
    let file = std::fs::File::create(&path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "root.img", data.as_slice())?;
    tar.into_inner()?.finish()?;
    Ok(path)
}
