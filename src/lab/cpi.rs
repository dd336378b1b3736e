//! The whole lab: the real Ironic, the companion server, a CPI config pointing at both, and the
//! `ironic_cpi` binary called exactly as the director calls it (one process per call, JSON on
//! stdin). Used by the integration tests and by the lab command.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
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
    /// The request's `api_version` (1 when it had none, as the director's default).
    pub api_version: u64,
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

    /// The cid of a successful create_vm: `[cid, networks]` under API version 2 and later, the
    /// bare cid under version 1 (any other shape fails the test).
    pub fn vm_cid(&self) -> String {
        let result = self.ok();
        let cid = if self.api_version >= 2 {
            result[0].as_str()
        } else {
            result.as_str()
        };
        cid.unwrap_or_else(|| {
            panic!(
                "create_vm (API version {}) answered no VM cid: {result}",
                self.api_version
            )
        })
        .to_string()
    }

    /// An error of type `kind` (`Bosh::Clouds::...`); its message.
    pub fn assert_error(&self, kind: &str) -> &str {
        assert_eq!(self.error_type(), Some(kind), "{}", self.stdout);
        self.response["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("a {kind} without a message: {}", self.stdout))
    }

    /// A `VMCreationFailed` the director may retry; its message.
    pub fn assert_retryable_creation_failure(&self) -> &str {
        let message = self.assert_error("Bosh::Clouds::VMCreationFailed");
        assert_eq!(
            self.response["error"]["ok_to_retry"],
            json!(true),
            "a retry may succeed: {}",
            self.stdout
        );
        message
    }
}

/// The node a VM cid (`<node uuid>:<vm id>`) names, read independently of the CPI's own parser;
/// a cid of another shape fails the test.
pub fn node_of(vm_cid: &str) -> &str {
    let (node, vm) = vm_cid
        .split_once(':')
        .unwrap_or_else(|| panic!("VM cid {vm_cid:?} is not <node uuid>:<vm id>"));
    assert!(
        uuid::Uuid::parse_str(node).is_ok() && uuid::Uuid::parse_str(vm).is_ok(),
        "VM cid {vm_cid:?} is not two UUIDs"
    );
    node
}

/// The CPI config at `base` with `edit` applied, written to `dir/name`.
pub fn config_variant(
    base: &Path,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let mut config: Value = serde_json::from_slice(&std::fs::read(base).unwrap()).unwrap();
    edit(&mut config);
    let path = dir.join(name);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// create_vm's arguments for a VM of resource class `rc` on `stemcell`, on one dynamic network,
/// with a fresh agent id.
pub fn create_vm_args(stemcell: &str, rc: &str) -> Value {
    json!([
        uuid::Uuid::new_v4().to_string(),
        stemcell,
        {"resource_class": rc},
        {"default": {"type": "dynamic", "cloud_properties": {}}},
        [],
        {"bosh": {}}
    ])
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

    /// The lab's CPI config with `edit` applied, written to `dir/name`.
    pub fn config_variant(&self, dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        config_variant(&self.config_path, dir, name, edit)
    }

    /// A stemcell of `size` bytes uploaded through the CPI (`config`, or the lab's); its cid.
    pub fn upload_stemcell(&self, config: Option<&Path>, size: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let image = make_stemcell_image(dir.path(), size, true).unwrap();
        let args = json!([image.to_str().unwrap(),
                          {"name": "s", "version": "1", "disk_format": "qcow2"}]);
        let out = self.call_with_config(
            config.unwrap_or(&self.config_path),
            "create_stemcell",
            args,
            2,
            None,
        );
        out.ok().as_str().unwrap().to_string()
    }

    /// The config drive create_vm gave Ironic for `node` (inline: gzip + base64, as Ironic
    /// stored it in its database), decoded back to the ISO image: its bytes, and a copy on disk
    /// for isoinfo.
    pub fn inline_config_drive(&self, node: &str) -> (Vec<u8>, tempfile::TempDir, PathBuf) {
        let info = self.ironic.stored_instance_info(node).unwrap();
        let encoded = info["configdrive"]
            .as_str()
            .unwrap_or_else(|| panic!("node {node} has no inline config drive: {info}"));
        let gz = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap();
        let mut iso = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut iso)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drive.iso");
        std::fs::write(&path, &iso).unwrap();
        (iso, dir, path)
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
        let api_version = request["api_version"].as_u64().unwrap_or(1);
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
            api_version,
        }
    }
}

/// A CPI process started by [`CpiLab::spawn_call`].
pub struct RunningCall {
    child: std::process::Child,
    writer: std::thread::JoinHandle<()>,
    started: Instant,
    api_version: u64,
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
            api_version: self.api_version,
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
