//! A real OpenStack Ironic 39.0.0 for tests: fake-hardware, SQLite, one all-in-one process on
//! loopback, in a fresh directory per lab.
//!
//! Isolation convention: the tests of one binary share one lab (kept in a `static OnceLock`), so
//! each test gives its nodes a name prefix and a `resource_class` of its own (e.g. `t-<test>-`,
//! `rc-<test>`) and filters lists by them; MACs are derived from a per-test byte. Never list or
//! count "all nodes" in a shared lab.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use ironic_cpi::config::Config;
use ironic_cpi::ironic::{IronicClient, IronicError, Node, NodeQuery};

use super::process::{self, ChildProcess, SpawnOptions};

/// How the lab's Ironic authenticates API users.
#[derive(Debug, Clone, PartialEq)]
pub enum LabAuth {
    None,
    /// `auth_strategy = http_basic` with one user in a bcrypt htpasswd file.
    HttpBasic {
        username: String,
        password: String,
    },
    /// `auth_strategy = keystone`: keystonemiddleware checks every token with a real Keystone.
    Keystone(KeystoneAuthtoken),
}

/// Ironic's `[keystone_authtoken]` (the service user that validates tokens) and the CPI's side.
#[derive(Debug, Clone, PartialEq)]
pub struct KeystoneAuthtoken {
    /// Keystone's v3 URL, e.g. `http://127.0.0.1:5000/v3`.
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    /// The `ironic.auth` object that [`IronicLab::config`] gives the CPI.
    pub cpi_auth: Value,
}

/// Ironic's API behind its own TLS (`[api] enable_ssl_api`, served by cheroot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// What clients trust: written into [`IronicLab::config`] as `ca_cert_file`.
    pub ca_file: PathBuf,
    /// The host name in the lab's URL (one the certificate names, resolving to 127.0.0.1).
    pub host: String,
}

#[derive(Debug, Clone)]
pub struct IronicLabOptions {
    pub auth: LabAuth,
    /// `[fake] power_delay`, `boot_delay`, `deploy_delay`: seconds the fake drivers sleep while
    /// holding the node's lock.
    pub power_delay: f64,
    pub boot_delay: f64,
    pub deploy_delay: f64,
    /// Defaults to `$IRONIC_CPI_LAB_VENV`, else `<repo>/.cache/ironic-venv` (installed on demand).
    pub venv: Option<PathBuf>,
    /// `[api] max_limit`: the largest page Ironic serves.
    pub max_limit: u32,
    /// `[conductor] node_locked_retry_attempts`: how often Ironic itself retries a held lock
    /// before answering 409 (its default 3, at 1 s each, hides short locks from clients).
    pub node_locked_retry_attempts: u32,
    /// Serve the API over HTTPS; plain HTTP when `None`.
    pub tls: Option<LabTls>,
    /// The conductor's periodic tasks that walk every node: the power-state sync (a lock and a
    /// driver call per node every 120 s) and the take-over check of active nodes (every 180 s).
    /// Benchmarks with tens of thousands of nodes turn them off so that Ironic's CPU time
    /// measures the API calls, not the background scans.
    pub periodic_node_scans: bool,
    pub start_timeout: Duration,
}

impl Default for IronicLabOptions {
    fn default() -> Self {
        IronicLabOptions {
            auth: LabAuth::None,
            power_delay: 0.0,
            boot_delay: 0.0,
            deploy_delay: 0.0,
            venv: None,
            max_limit: 1000,
            node_locked_retry_attempts: 1,
            tls: None,
            periodic_node_scans: true,
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// A running Ironic. Stopped on drop, and by a watchdog when the test process exits.
pub struct IronicLab {
    /// Base URL, without `/v1` (`https://HOST:PORT` with [`IronicLabOptions::tls`]).
    pub url: String,
    /// The lab's directory: config, SQLite database, logs.
    pub dir: PathBuf,
    /// From spawning `ironic` until `GET /v1` answered.
    pub started_in: Duration,
    auth: LabAuth,
    tls: Option<LabTls>,
    venv: PathBuf,
    start_timeout: Duration,
    process: ChildProcess,
}

impl IronicLab {
    pub fn start(opts: IronicLabOptions) -> Result<IronicLab, String> {
        let venv = ensure_venv(opts.venv.clone())?;
        let dir = tempfile::Builder::new()
            .prefix("ironic-lab-")
            .tempdir()
            .map_err(|e| format!("cannot create a lab directory: {e}"))?
            .keep();
        let port = process::free_port()?;
        let config_file = dir.join("ironic.conf");
        if let LabAuth::HttpBasic { username, password } = &opts.auth {
            let hash = bcrypt::hash(password, 4)
                .map_err(|e| format!("cannot hash the lab password: {e}"))?;
            std::fs::write(dir.join("htpasswd"), format!("{username}:{hash}\n"))
                .map_err(|e| format!("cannot write htpasswd: {e}"))?;
        }
        std::fs::write(&config_file, ironic_conf(&dir, port, &opts))
            .map_err(|e| format!("cannot write {}: {e}", config_file.display()))?;

        let mut dbsync = Command::new(venv.join("bin/ironic-dbsync"));
        dbsync
            .arg("--config-file")
            .arg(&config_file)
            .arg("create_schema");
        process::run_logged(
            "ironic-dbsync create_schema",
            dbsync,
            &dir.join("dbsync.log"),
        )?;

        let url = match &opts.tls {
            Some(tls) => format!("https://{}:{port}", tls.host),
            None => format!("http://127.0.0.1:{port}"),
        };
        let ca = opts.tls.as_ref().map(|t| t.ca_file.as_path());
        let (process, started_in) = spawn_ironic(&venv, &dir, &url, ca, opts.start_timeout)?;
        Ok(IronicLab {
            url,
            dir,
            started_in,
            auth: opts.auth,
            tls: opts.tls,
            venv,
            start_timeout: opts.start_timeout,
            process,
        })
    }

    /// Stop Ironic and start it again on the same port and database (to test riding out an API
    /// outage). Returns how long it was unreachable.
    pub fn restart(&mut self) -> Result<Duration, String> {
        let down = Instant::now();
        self.process.keep_dir();
        self.process.stop();
        let ca = self.tls.as_ref().map(|t| t.ca_file.as_path());
        let (process, started_in) =
            spawn_ironic(&self.venv, &self.dir, &self.url, ca, self.start_timeout)?;
        self.process = process;
        self.started_in = started_in;
        Ok(down.elapsed())
    }

    /// A CPI config pointing at this lab, polling fast (fake transitions take 0.1-0.5 s).
    pub fn config(&self) -> Config {
        // The document is fixed and valid; failing here is a bug in this file.
        Config::from_value(self.config_doc()).expect("lab config is valid")
    }

    /// [`IronicLab::config`] as the JSON the lab writes: only the keys it sets, none of the
    /// defaults, so that an older `ironic_cpi` (the benchmarks' "before" binary) reads it too.
    pub fn config_doc(&self) -> Value {
        let auth = match &self.auth {
            LabAuth::None => json!({"type": "none"}),
            LabAuth::HttpBasic { username, password } => {
                json!({"type": "http_basic", "username": username, "password": password})
            }
            LabAuth::Keystone(k) => k.cpi_auth.clone(),
        };
        let mut doc = json!({"ironic": {
            "url": self.url,
            "auth": auth,
            "connect_timeout": 5.0,
            "request_timeout": 60.0,
            "retry": {"max_attempts": 10, "initial_delay": 0.2, "max_delay": 2.0},
            "poll": {"initial_interval": 0.1, "factor": 1.5, "max_interval": 1.0, "jitter": 0.1},
            "timeouts": {"deploy": 60.0, "provide": 60.0, "undeploy": 60.0, "clean": 60.0,
                         "manage": 60.0, "power": 60.0},
        }});
        if let Some(tls) = &self.tls {
            doc["ironic"]["ca_cert_file"] = json!(tls.ca_file);
        }
        doc
    }

    /// A client for this lab with [`IronicLab::config`].
    pub fn client(&self) -> Result<IronicClient, IronicError> {
        IronicClient::new(&self.config().ironic)
    }

    /// Ironic's own log (API and conductor).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ironic.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path(), lines)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The Python venv Ironic runs from (its `bin/python` can import Ironic's own modules).
    pub fn venv(&self) -> &Path {
        &self.venv
    }

    /// The `instance_info` Ironic stored for a node, read from its database: the API masks the
    /// config drive (`"******"`), and tests need to see the drive a node really got.
    pub fn stored_instance_info(&self, node_uuid: &str) -> Result<Value, String> {
        let script = "import json, sqlite3, sys\n\
            db = sqlite3.connect(sys.argv[1])\n\
            row = db.execute('SELECT instance_info FROM nodes WHERE uuid = ?', (sys.argv[2],)).fetchone()\n\
            print(row[0] if row and row[0] else '{}')\n";
        let out = Command::new(self.venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .arg(self.dir.join("ironic.sqlite"))
            .arg(node_uuid)
            .output()
            .map_err(|e| format!("cannot run the venv's python: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "reading instance_info of {node_uuid}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("instance_info of {node_uuid} is not JSON: {e}"))
    }

    /// Stop now (also happens on drop).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Start `ironic` on the lab's config and wait until `GET /v1` answers (over TLS, trusting `ca`,
/// when given).
fn spawn_ironic(
    venv: &Path,
    dir: &Path,
    url: &str,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<(ChildProcess, Duration), String> {
    let mut cmd = Command::new(venv.join("bin/ironic"));
    cmd.arg("--config-file").arg(dir.join("ironic.conf"));
    let started = Instant::now();
    let mut child = ChildProcess::spawn(
        "ironic",
        cmd,
        &dir.join("ironic.stdout.log"),
        SpawnOptions {
            grace: Duration::from_secs(8),
            remove_dir: Some(dir.to_path_buf()),
        },
    )?;
    let v1 = format!("{url}/v1");
    let answered = match ca {
        Some(ca) => process::wait_for_https(&v1, ca, timeout, Some(&mut child)),
        None => process::wait_for_http(&v1, timeout, Some(&mut child)),
    };
    answered.map_err(|e| {
        format!(
            "{e}\nironic.log:\n{}",
            process::log_tail(&dir.join("ironic.log"), 30)
        )
    })?;
    let started_in = started.elapsed();
    eprintln!(
        "ironic started in {:.2} s at {url} (dir {})",
        started_in.as_secs_f64(),
        dir.display()
    );
    Ok((child, started_in))
}

/// The venv to use: installed by `scripts/lab/install-ironic` when it is the repository's own
/// (cheap when up to date; reinstalls when the constraints changed). An explicitly named venv is
/// only checked, never modified.
fn ensure_venv(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    let named = explicit.or_else(|| std::env::var_os("IRONIC_CPI_LAB_VENV").map(PathBuf::from));
    if let Some(v) = named {
        if v.join("bin/ironic").is_file() {
            return Ok(v);
        }
        return Err(format!(
            "{} has no bin/ironic; run scripts/lab/install-ironic with IRONIC_CPI_LAB_VENV={}",
            v.display(),
            v.display()
        ));
    }
    let root = process::repo_root();
    let venv = root.join(".cache/ironic-venv");
    let script = root.join("scripts/lab/install-ironic");
    let log = root.join(".cache/install-ironic.log");
    std::fs::create_dir_all(root.join(".cache"))
        .map_err(|e| format!("cannot create {}/.cache: {e}", root.display()))?;
    let mut cmd = Command::new(&script);
    // Two test binaries may start at once: one installs, the other waits on the lock.
    cmd.env_remove("IRONIC_CPI_LAB_VENV");
    let lock = root.join(".cache/install-ironic.lock");
    let mut flock = Command::new("flock");
    flock.arg(&lock).arg(&script);
    let runner = if which("flock") { flock } else { cmd };
    process::run_logged("scripts/lab/install-ironic", runner, &log)?;
    if venv.join("bin/ironic").is_file() {
        Ok(venv)
    } else {
        Err(format!(
            "{} has no bin/ironic after install",
            venv.display()
        ))
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// Ironic's configuration for the lab (standalone, fake-hardware, SQLite, the lab's auth), on
/// `port`, with the lab's options.
fn ironic_conf(dir: &Path, port: u16, opts: &IronicLabOptions) -> String {
    let d = dir.display();
    let auth = match opts.auth {
        LabAuth::None => "auth_strategy = noauth".to_string(),
        LabAuth::HttpBasic { .. } => {
            format!("auth_strategy = http_basic\nhttp_basic_auth_user_file = {d}/htpasswd")
        }
        LabAuth::Keystone(_) => "auth_strategy = keystone".to_string(),
    };
    // Sections appended after the fixed ones.
    let mut more = String::new();
    if let LabAuth::Keystone(k) = &opts.auth {
        // No token cache: a token revoked in Keystone is refused by the very next request.
        more.push_str(&format!(
            "[keystone_authtoken]
auth_type = password
auth_url = {url}
www_authenticate_uri = {url}
username = {user}
password = {password}
user_domain_name = Default
project_name = {project}
project_domain_name = Default
token_cache_time = -1
",
            url = k.auth_url,
            user = k.username,
            password = k.password,
            project = k.project_name,
        ));
    }
    let api_tls = match &opts.tls {
        Some(tls) => format!(
            "enable_ssl_api = true
cert_file = {}
key_file = {}
public_endpoint = https://{}:{port}
",
            tls.cert_file.display(),
            tls.key_file.display(),
            tls.host,
        ),
        None => String::new(),
    };
    // 0 disables each (documented in Ironic's [conductor] options).
    let scans = if opts.periodic_node_scans {
        ""
    } else {
        "sync_power_state_interval = 0\nsync_local_state_interval = 0\n"
    };
    format!(
        "[DEFAULT]
{auth}
host = localhost
rpc_transport = none
log_dir = {d}
log_file = ironic.log
use_stderr = false
enabled_hardware_types = fake-hardware
enabled_bios_interfaces = fake,no-bios
enabled_boot_interfaces = fake
enabled_console_interfaces = fake,no-console
enabled_deploy_interfaces = fake
enabled_firmware_interfaces = fake,no-firmware
enabled_inspect_interfaces = fake,no-inspect
enabled_management_interfaces = fake
enabled_network_interfaces = noop
enabled_power_interfaces = fake
enabled_raid_interfaces = fake,no-raid
enabled_rescue_interfaces = fake,no-rescue
enabled_storage_interfaces = noop
enabled_vendor_interfaces = fake,no-vendor
default_boot_interface = fake
default_deploy_interface = fake
default_network_interface = noop
default_resource_class = baremetal
[api]
host_ip = 127.0.0.1
port = {port}
max_limit = {max_limit}
{api_tls}[conductor]
automated_clean = true
node_locked_retry_attempts = {locked}
{scans}[database]
# SQLite lets one writer in at a time; its default 5 s wait for the lock is too short for a busy
# 2-core machine running API and conductor together (500: database is locked).
connection = sqlite:///{d}/ironic.sqlite?timeout=60
[dhcp]
dhcp_provider = none
[fake]
power_delay = {power}
boot_delay = {boot}
deploy_delay = {deploy}
[oslo_concurrency]
lock_path = {d}
{more}",
        max_limit = opts.max_limit,
        locked = opts.node_locked_retry_attempts.max(1),
        power = opts.power_delay,
        boot = opts.boot_delay,
        deploy = opts.deploy_delay,
    )
}

/// Where an enrolled node should end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnrollTarget {
    Enroll,
    Manageable,
    #[default]
    Available,
}

/// A fake-hardware node to enroll.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub macs: Vec<String>,
    pub cpus: u32,
    pub memory_mb: u64,
    pub local_gb: u64,
    pub cpu_arch: String,
    pub resource_class: Option<String>,
    pub traits: Vec<String>,
    pub conductor_group: Option<String>,
    /// The project that owns the node (Ironic's RBAC lets project-scoped users see and deploy
    /// only the nodes their project owns or leases).
    pub owner: Option<String>,
    pub extra: Map<String, Value>,
    pub target: EnrollTarget,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            macs: vec![],
            cpus: 8,
            memory_mb: 16384,
            local_gb: 100,
            cpu_arch: "x86_64".into(),
            resource_class: None,
            traits: vec![],
            conductor_group: None,
            owner: None,
            extra: Map::new(),
            target: EnrollTarget::Available,
        }
    }

    /// Node `index` of a test's pool: named `<rc>-<index>`, of resource class `rc`, with `nics`
    /// ports whose MACs come from the test's own `byte` (see [`lab_mac`]).
    pub fn in_pool(rc: &str, byte: u8, index: u16, nics: u8) -> NodeSpec {
        let mut spec = NodeSpec::new(format!("{rc}-{index}"));
        spec.resource_class = Some(rc.into());
        spec.macs = (0..nics).map(|n| lab_mac(byte, index, n)).collect();
        spec
    }
}

/// A test's pool: `count` available nodes of resource class `rc`, one port each (MACs from the
/// test's own `byte`); their uuids.
pub fn enroll_pool(client: &IronicClient, rc: &str, byte: u8, count: u16) -> Vec<String> {
    enroll_pool_with(client, rc, byte, count, |_| {})
}

/// [`enroll_pool`] with `edit` applied to each node's spec before it is enrolled.
pub fn enroll_pool_with(
    client: &IronicClient,
    rc: &str,
    byte: u8,
    count: u16,
    edit: impl Fn(&mut NodeSpec),
) -> Vec<String> {
    (0..count)
        .map(|i| {
            let mut spec = NodeSpec::in_pool(rc, byte, i, 1);
            edit(&mut spec);
            enroll_node(client, &spec)
                .unwrap_or_else(|e| panic!("enrolling {}: {e}", spec.name))
                .uuid
        })
        .collect()
}

/// Everything a VM's coming and going could leave behind on the nodes of `rc`, by uuid: what
/// must be as it was after a VM comes and goes.
pub fn pool_state(client: &IronicClient, rc: &str) -> Vec<Value> {
    let mut nodes = client
        .list_nodes(&NodeQuery {
            resource_class: Some(rc.into()),
            ..Default::default()
        })
        .unwrap();
    nodes.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    nodes
        .into_iter()
        .map(|n| {
            json!({"uuid": n.uuid, "name": n.name, "state": n.provision_state,
                   "target": n.target_provision_state, "instance_uuid": n.instance_uuid,
                   "maintenance": n.maintenance, "extra": n.extra,
                   "instance_info": n.instance_info})
        })
        .collect()
}

/// `52:54:00:<a>:<b>:<c>` from a test's own byte and an index, so tests never share MACs.
pub fn lab_mac(test_byte: u8, index: u16, nic: u8) -> String {
    format!(
        "52:54:{test_byte:02x}:{:02x}:{:02x}:{nic:02x}",
        index >> 8,
        index & 0xff
    )
}

/// Enroll a fake-hardware node through the client: create it and its ports, power it off once
/// (the allocation conductor skips nodes whose power state is still null), then walk it to the
/// target state, waiting for every transition.
pub fn enroll_node(client: &IronicClient, spec: &NodeSpec) -> Result<Node, IronicError> {
    let mut body = json!({
        "name": spec.name,
        "driver": "fake-hardware",
        "properties": {
            "cpus": spec.cpus,
            "memory_mb": spec.memory_mb,
            "local_gb": spec.local_gb,
            "cpu_arch": spec.cpu_arch,
        },
        "extra": spec.extra,
    });
    if let Some(rc) = &spec.resource_class {
        body["resource_class"] = json!(rc);
    }
    if let Some(g) = &spec.conductor_group {
        body["conductor_group"] = json!(g);
    }
    if let Some(o) = &spec.owner {
        body["owner"] = json!(o);
    }
    let node = client.create_node(&body)?;
    for mac in &spec.macs {
        client.create_port(&node.uuid, mac, None)?;
    }
    if !spec.traits.is_empty() {
        // Ironic replaces the traits in a transaction that SQLite can refuse at once, without
        // waiting, when a conductor task writes the node meanwhile ("database is locked"); the
        // PUT is idempotent, so it is repeated. Production Ironic runs on MySQL or PostgreSQL.
        let mut attempt = 1;
        loop {
            match client.set_node_traits(&node.uuid, &spec.traits) {
                Err(IronicError::Http {
                    status: 500,
                    ref message,
                    ..
                }) if message.contains("database is locked") && attempt < 10 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
                }
                other => break other?,
            }
        }
    }
    let timeouts = &client.config().timeouts;
    client.set_power_state(&node.uuid, "power off")?;
    client.wait_for_power_state(&node.uuid, "power off", timeouts.power.get())?;
    if spec.target != EnrollTarget::Enroll {
        client.set_provision_state(&node.uuid, "manage", None)?;
        client.wait_for_provision_state(&node.uuid, &["manageable"], timeouts.manage.get())?;
    }
    if spec.target == EnrollTarget::Available {
        client.set_provision_state(&node.uuid, "provide", None)?;
        client.wait_for_provision_state(&node.uuid, &["available"], timeouts.provide.get())?;
    }
    client.get_node(&node.uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_carries_options() {
        let opts = IronicLabOptions {
            auth: LabAuth::HttpBasic {
                username: "u".into(),
                password: "p".into(),
            },
            deploy_delay: 2.0,
            max_limit: 7,
            ..Default::default()
        };
        let c = ironic_conf(Path::new("/tmp/x"), 1234, &opts);
        for want in [
            "port = 1234",
            "max_limit = 7",
            "deploy_delay = 2",
            "auth_strategy = http_basic",
            "http_basic_auth_user_file = /tmp/x/htpasswd",
            "connection = sqlite:////tmp/x/ironic.sqlite?timeout=60",
        ] {
            assert!(c.contains(want), "missing {want}");
        }
        assert!(!c.contains("sync_power_state_interval"));
    }

    #[test]
    fn conf_can_turn_off_node_scans() {
        let opts = IronicLabOptions {
            periodic_node_scans: false,
            ..Default::default()
        };
        let c = ironic_conf(Path::new("/tmp/x"), 1234, &opts);
        let conductor = &c[c.find("[conductor]").unwrap()..c.find("[database]").unwrap()];
        assert!(conductor.contains("sync_power_state_interval = 0\n"));
        assert!(conductor.contains("sync_local_state_interval = 0\n"));
    }

    #[test]
    fn macs_are_distinct() {
        assert_eq!(lab_mac(0x10, 0x0102, 3), "52:54:10:01:02:03");
        assert_ne!(lab_mac(1, 1, 0), lab_mac(2, 1, 0));
    }
}
