//! Config drive: what goes in (settings, user data, meta data, network data) and whether
//! independent readers see it.
//!
//! The ISO is read back with `isoinfo` (Debian genisoimage) through Rock Ridge and through
//! Joliet, with `xorriso`, and probed with `blkid` (udev names the by-label links from it); the
//! gzip/base64 wrapping is undone with `base64 -d | gzip -dc`. The JSON is
//! decoded with structs that mirror the Go agent's types field by field (`Option` everywhere,
//! because Go leaves missing and null fields at their zero value, but a wrong JSON type fails).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use ironic_cpi::config::{AgentConfig, Defaults, Secret, UnusedNicPolicy};
use ironic_cpi::configdrive::{
    self, build, ConfigDrive, DiskLayout, DriveInput, EC2_META_DATA, EC2_USER_DATA,
    OPENSTACK_META_DATA, OPENSTACK_NETWORK_DATA, OPENSTACK_USER_DATA,
};
use ironic_cpi::{CpiError, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// The Go agent's types (bosh-agent settings/settings.go; infrastructure UserDataContentsType and
// MetadataContentsType of v2.477.0, the last agent with registry support).

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoSettings {
    agent_id: Option<String>,
    blobstore: Option<GoBlobstore>,
    disks: Option<GoDisks>,
    env: Option<GoEnv>,
    networks: Option<HashMap<String, GoNetwork>>,
    ntp: Option<Vec<String>>,
    mbus: Option<String>,
    vm: Option<GoVm>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoBlobstore {
    provider: Option<String>,
    options: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoDisks {
    system: Option<String>,
    ephemeral: Option<Value>,
    persistent: Option<Map<String, Value>>,
    raw_ephemeral: Option<Vec<Map<String, Value>>>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoEnv {
    bosh: Option<GoBoshEnv>,
    persistent_disk_fs: Option<String>,
    persistent_disk_mount_options: Option<Vec<String>>,
    persistent_disk_partitioner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoBoshEnv {
    password: Option<String>,
    keep_root_password: Option<bool>,
    remove_dev_tools: Option<bool>,
    remove_static_libraries: Option<bool>,
    authorized_keys: Option<Vec<String>>,
    swap_size: Option<u64>,
    mbus: Option<GoMbus>,
    ipv6: Option<GoIpv6>,
    blobstores: Option<Vec<GoBlobstore>>,
    ntp: Option<Vec<String>>,
    parallel: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoMbus {
    cert: Option<GoCert>,
    urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoCert {
    ca: Option<String>,
    certificate: Option<String>,
    private_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoIpv6 {
    enable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoVm {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoNetwork {
    #[serde(rename = "type")]
    kind: Option<String>,
    ip: Option<String>,
    netmask: Option<String>,
    gateway: Option<String>,
    resolved: Option<bool>,
    use_dhcp: Option<bool>,
    default: Option<Vec<String>>,
    dns: Option<Vec<String>>,
    mac: Option<String>,
    preconfigured: Option<bool>,
    routes: Option<Vec<Map<String, Value>>>,
    alias: Option<String>,
    prefix: Option<String>,
}

/// v2.477.0 `UserDataContentsType` (the settings fields are decoded separately as GoSettings).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GoUserData {
    registry: Option<GoRegistry>,
    server: Option<GoServer>,
    dns: Option<GoDns>,
    networks: Option<HashMap<String, GoNetwork>>,
}

#[derive(Debug, Deserialize)]
struct GoRegistry {
    endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GoServer {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GoDns {
    nameserver: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct GoMetadata {
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
    #[serde(rename = "public-keys")]
    public_keys: Option<HashMap<String, HashMap<String, String>>>,
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
const AGENT_ID: &str = "2d6c1a0e-4a8b-4b2c-9f7e-1c1e6f2b9a10";
const MBUS: &str = "nats://nats:mbus-secret-pw@10.0.0.6:4222";

fn fixture_env() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/configdrive/env_with_mbus_cert.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture env is JSON")
}

/// The secrets in the fixtures; none may appear in logs, Debug output or errors.
fn secrets(env: &Value) -> Vec<String> {
    vec![
        MBUS.to_string(),
        "mbus-secret-pw".to_string(),
        env["bosh"]["password"].as_str().unwrap().to_string(),
        env["bosh"]["mbus"]["cert"]["private_key"]
            .as_str()
            .unwrap()
            .lines()
            .nth(5)
            .unwrap()
            .to_string(),
        "blob-agent-pw".to_string(),
    ]
}

fn manual(ip: &str, gateway: &str, dns: &[&str], default: bool) -> Value {
    let mut net = json!({
        "type": "manual",
        "ip": ip,
        "netmask": "255.255.255.0",
        "prefix": "24",
        "gateway": gateway,
        "dns": dns,
        "cloud_properties": {},
    });
    if default {
        net["default"] = json!(["dns", "gateway"]);
    }
    net
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn agent_config() -> AgentConfig {
    AgentConfig {
        mbus: Some(Secret::new(MBUS)),
        ntp: vec!["0.pool.ntp.org".into(), "1.pool.ntp.org".into()],
        blobstore: Some(json!({
            "provider": "dav",
            "options": {"endpoint": "http://10.0.0.6:25250", "user": "agent", "password": "blob-agent-pw"}
        })),
    }
}

struct Case {
    macs: Vec<String>,
    networks: Map<String, Value>,
    env: Value,
    agent: AgentConfig,
    defaults: Defaults,
    persistent: Map<String, Value>,
    registry: Option<String>,
    /// MACs of the node's `pxe_enabled` ports.
    pxe: Vec<String>,
}

impl Case {
    fn new(macs: &[&str], networks: Value) -> Case {
        Case {
            macs: macs.iter().map(|s| s.to_string()).collect(),
            networks: obj(networks),
            env: fixture_env(),
            agent: agent_config(),
            defaults: Defaults::default(),
            persistent: Map::new(),
            registry: None,
            pxe: Vec::new(),
        }
    }

    /// The common shape: one manual network, default for dns and gateway, on a one-NIC node.
    fn one_nic(mac: &str) -> Case {
        Case::new(
            &[mac],
            json!({"default": manual("10.0.0.5", "10.0.0.1", &["10.0.0.2"], true)}),
        )
    }

    fn build(&self) -> Result<ConfigDrive, CpiError> {
        build(&DriveInput {
            agent_id: AGENT_ID,
            node_uuid: NODE,
            node_macs: &self.macs,
            pxe_macs: &self.pxe,
            networks: &self.networks,
            env: &self.env,
            agent: &self.agent,
            defaults: &self.defaults,
            disks: &DiskLayout::from_defaults(&self.defaults),
            persistent_disks: &self.persistent,
            registry_endpoint: self.registry.as_deref(),
        })
    }

    fn ok(&self) -> ConfigDrive {
        self.build().unwrap_or_else(|e| panic!("build failed: {e}"))
    }

    fn err(&self) -> CpiError {
        match self.build() {
            Ok(d) => panic!("build should fail, got {d:?}"),
            Err(e) => e,
        }
    }
}

fn json_file(drive: &ConfigDrive, path: &str) -> Value {
    let bytes = drive
        .file(path)
        .unwrap_or_else(|| panic!("{path} missing from the drive"));
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Decode user data the way agents of both generations do; returns the raw JSON too.
fn decode_user_data(drive: &ConfigDrive) -> (Value, GoSettings, GoUserData) {
    let raw = drive.file(EC2_USER_DATA).expect("user data");
    let settings: GoSettings = serde_json::from_slice(raw)
        .unwrap_or_else(|e| panic!("the Go agent would refuse the user data: {e}"));
    let user_data: GoUserData = serde_json::from_slice(raw)
        .unwrap_or_else(|e| panic!("the v2.477 agent would refuse the user data: {e}"));
    (serde_json::from_slice(raw).unwrap(), settings, user_data)
}

fn decode_meta_data(drive: &ConfigDrive) -> GoMetadata {
    for path in [EC2_META_DATA, OPENSTACK_META_DATA] {
        let md: GoMetadata = serde_json::from_slice(drive.file(path).expect("meta data"))
            .unwrap_or_else(|e| panic!("the agent would refuse {path}: {e}"));
        // Registry-era agents abort bootstrap without public-keys["0"]["openssh-key"].
        let keys = md.public_keys.as_ref().expect("public-keys");
        assert!(keys.get("0").and_then(|k| k.get("openssh-key")).is_some());
        assert_eq!(md.instance_id.as_deref(), Some(NODE));
    }
    serde_json::from_slice(drive.file(EC2_META_DATA).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Independent readers

/// A reader program; missing means the machine is not set up as CI sets it up: fail, loudly.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), "/sbin".into()]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed: the config drive tests read the ISO with independent tools. \
         Install it with `apt-get install {package}` (the project's CI script does)."
    );
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn expected_files(drive: &ConfigDrive) -> BTreeMap<String, Vec<u8>> {
    let files: BTreeMap<String, Vec<u8>> = drive
        .files()
        .iter()
        .map(|(p, c)| (format!("/{p}"), c.clone()))
        .collect();
    let want: BTreeSet<&str> = [
        EC2_META_DATA,
        EC2_USER_DATA,
        OPENSTACK_META_DATA,
        OPENSTACK_USER_DATA,
        OPENSTACK_NETWORK_DATA,
    ]
    .into_iter()
    .collect();
    assert_eq!(
        drive
            .files()
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<BTreeSet<_>>(),
        want
    );
    files
}

/// Every reader must see the label, every path and byte-equal contents.
fn check_with_readers(drive: &ConfigDrive) {
    let isoinfo = tool("isoinfo", "genisoimage");
    let xorriso = tool("xorriso", "xorriso");
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("drive.iso");
    std::fs::write(&iso, drive.iso()).unwrap();
    let files = expected_files(drive);

    let descr = String::from_utf8_lossy(&run(Command::new(&isoinfo).arg("-d").arg("-i").arg(&iso)))
        .to_string();
    assert!(descr.contains("Volume id: config-2\n"), "{descr}");
    assert!(descr.contains("Joliet"), "no Joliet: {descr}");
    assert!(descr.contains("Rock Ridge"), "no Rock Ridge: {descr}");

    // udev names /dev/disk/by-label/ from blkid's probe: the path the agent looks for.
    let blkid = tool("blkid", "util-linux");
    let probe = String::from_utf8_lossy(&run(Command::new(&blkid).arg("-p").arg(&iso))).to_string();
    assert!(
        probe.contains(r#"LABEL="config-2""#) && probe.contains(r#"TYPE="iso9660""#),
        "{probe}"
    );

    for ext in ["-R", "-J"] {
        let listing = run(Command::new(&isoinfo).args([ext, "-f", "-i"]).arg(&iso));
        let listed: BTreeSet<String> = String::from_utf8_lossy(&listing)
            .lines()
            .map(str::to_string)
            .collect();
        let mut want: BTreeSet<String> = files.keys().cloned().collect();
        for d in ["/ec2", "/ec2/latest", "/openstack", "/openstack/latest"] {
            want.insert(d.to_string());
        }
        assert_eq!(listed, want, "isoinfo {ext} -f");
        for (path, content) in &files {
            // isoinfo -x exits 0 with no output for a missing path: compare the bytes.
            let got = run(Command::new(&isoinfo)
                .args([ext, "-x", path, "-i"])
                .arg(&iso));
            assert!(
                &got == content,
                "isoinfo {ext} -x {path}: {} bytes, want {}",
                got.len(),
                content.len()
            );
        }
    }

    let pvd = String::from_utf8_lossy(&run(Command::new(&xorriso)
        .args(["-abort_on", "FAILURE", "-indev"])
        .arg(&iso)
        .arg("-pvd_info")))
    .to_string();
    assert!(
        pvd.lines()
            .any(|l| l.starts_with("Volume Id") && l.trim_end().ends_with(": config-2")),
        "{pvd}"
    );
    let out = dir.path().join("xorriso");
    run(Command::new(&xorriso)
        .args(["-abort_on", "FAILURE", "-osirrox", "on", "-indev"])
        .arg(&iso)
        .args(["-extract", "/"])
        .arg(&out));
    let mut extracted = BTreeMap::new();
    walk(&out, &out, &mut extracted);
    assert_eq!(extracted, files, "xorriso -extract");

    // Ironic's string: base64 of gzip of the ISO.
    let b64 = drive.to_base64();
    assert!(!b64.contains('\n') && b64.len() == drive.base64_len());
    let mut child = Command::new("sh")
        .args(["-c", "base64 -d | gzip -dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(b64.as_bytes()));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == drive.iso(), "base64 -d | gzip -dc differs");
    assert_eq!(drive.gzipped_size(), drive.gzipped().len());
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            out.insert(format!("/{rel}"), std::fs::read(&path).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A logger that keeps everything, to prove no secret is logged.

struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

fn recorder() -> &'static Recorder {
    static REC: OnceLock<&'static Recorder> = OnceLock::new();
    REC.get_or_init(|| {
        let rec: &'static Recorder = Box::leak(Box::new(Recorder(Mutex::new(Vec::new()))));
        log::set_logger(rec).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        rec
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn one_network_without_mac_on_a_one_nic_node() {
    // Ironic may hand out upper case or dashes; the agent compares lower case, colons.
    let case = Case::one_nic("52-54-00-AB-CD-01");
    let drive = case.ok();
    check_with_readers(&drive);

    let (raw, settings, user_data) = decode_user_data(&drive);
    let nets = settings.networks.as_ref().unwrap();
    assert_eq!(nets.len(), 1, "no placeholder: the only NIC is used");
    let net = &nets["default"];
    assert_eq!(net.mac.as_deref(), Some("52:54:00:ab:cd:01"));
    assert_eq!(net.use_dhcp, Some(false));
    assert_eq!(net.prefix.as_deref(), Some("24"));
    assert_eq!(net.netmask.as_deref(), Some("255.255.255.0"));
    assert_eq!(net.ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(net.gateway.as_deref(), Some("10.0.0.1"));

    // Raw JSON types, as Go decodes them.
    let rn = &raw["networks"]["default"];
    assert!(rn["prefix"].is_string() && rn["use_dhcp"].is_boolean());
    assert!(rn["default"].is_array() && rn["dns"].is_array());
    assert!(raw["disks"]["system"].is_string());
    assert!(
        raw["disks"]["ephemeral"].is_null(),
        "ephemeral null by default"
    );
    assert!(raw["disks"]["persistent"].is_object());
    assert!(raw.get("preconfigured").is_none() && rn.get("preconfigured").is_none());

    assert_eq!(settings.agent_id.as_deref(), Some(AGENT_ID));
    assert_eq!(settings.vm.unwrap().name.as_deref(), Some(NODE));
    assert_eq!(settings.mbus.as_deref(), Some(MBUS));
    assert_eq!(settings.disks.unwrap().system.as_deref(), Some("/dev/sda"));
    assert_eq!(
        settings.ntp.unwrap(),
        vec!["0.pool.ntp.org".to_string(), "1.pool.ntp.org".to_string()]
    );
    assert_eq!(settings.blobstore.unwrap().provider.as_deref(), Some("dav"));
    assert_eq!(user_data.server.unwrap().name.as_deref(), Some(NODE));
    assert_eq!(
        user_data.dns.unwrap().nameserver.unwrap(),
        vec!["10.0.0.2".to_string()]
    );
    assert!(user_data.registry.is_none());

    // The director gets its networks back with the MAC, nothing else changed.
    let mut want = case.networks.clone();
    want["default"]["mac"] = json!("52:54:00:ab:cd:01");
    assert_eq!(drive.networks(), &want);

    let md = decode_meta_data(&drive);
    assert_eq!(
        md.public_keys.unwrap()["0"]["openssh-key"],
        "",
        "key 0 always written, empty without a key"
    );
    // Both user data files are the same document.
    assert_eq!(drive.file(EC2_USER_DATA), drive.file(OPENSTACK_USER_DATA));
}

#[test]
fn several_networks_chosen_by_cloud_properties_macs() {
    let macs = [
        "52:54:00:00:00:0a",
        "52:54:00:00:00:0b",
        "52:54:00:00:00:0c",
        "52:54:00:00:00:0d",
    ];
    let mut storage = manual("192.168.50.7", "192.168.50.1", &["192.168.50.2"], false);
    // Subnets list the MACs of every node they reach; this node's is the second one.
    storage["cloud_properties"] = json!({"macs": ["52:54:00:99:99:99", "52:54:00:00:00:0D"]});
    let mut public = manual("10.0.0.5", "10.0.0.1", &["10.0.0.2", "192.168.50.2"], true);
    public["cloud_properties"] = json!({"macs": ["52-54-00-00-00-0B"]});
    // No macs: takes the lowest free MAC.
    let backend = manual("172.16.0.9", "172.16.0.1", &[], false);
    let case = Case::new(
        &macs,
        json!({"storage": storage, "public": public, "backend": backend}),
    );
    let drive = case.ok();
    check_with_readers(&drive);

    let (raw, settings, _) = decode_user_data(&drive);
    let nets = settings.networks.unwrap();
    assert_eq!(nets["storage"].mac.as_deref(), Some("52:54:00:00:00:0d"));
    assert_eq!(nets["public"].mac.as_deref(), Some("52:54:00:00:00:0b"));
    assert_eq!(nets["backend"].mac.as_deref(), Some("52:54:00:00:00:0a"));
    // The remaining NIC (…:0c) is left to the agent, which gives it DHCP (default policy).
    assert_eq!(nets.len(), 3);

    // DNS: the default network's servers first, each once.
    assert_eq!(
        raw["dns"]["nameserver"],
        json!(["10.0.0.2", "192.168.50.2"])
    );

    // No placeholder in what the director gets.
    assert_eq!(
        drive.networks().keys().collect::<Vec<_>>(),
        vec!["backend", "public", "storage"]
    );
    assert_eq!(
        drive.networks()["storage"]["mac"],
        json!("52:54:00:00:00:0d")
    );

    // network_data.json: a link per NIC, the three networks, DNS services; no loopback.
    let nd = json_file(&drive, OPENSTACK_NETWORK_DATA);
    let links: Vec<&str> = nd["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ethernet_mac_address"].as_str().unwrap())
        .collect();
    assert_eq!(links, macs.to_vec());
    let networks = nd["networks"].as_array().unwrap();
    assert_eq!(networks.len(), 3);
    let public_nd = networks
        .iter()
        .find(|n| n["network_id"] == "public")
        .unwrap();
    assert_eq!(public_nd["type"], "ipv4");
    assert_eq!(public_nd["ip_address"], "10.0.0.5");
    assert_eq!(public_nd["link"], "port-52540000000b");
    assert_eq!(public_nd["routes"][0]["gateway"], "10.0.0.1");
    let storage_nd = networks
        .iter()
        .find(|n| n["network_id"] == "storage")
        .unwrap();
    assert_eq!(
        storage_nd["routes"],
        json!([]),
        "only the default gateway network gets the default route"
    );
    assert_eq!(
        nd["services"],
        json!([{"type": "dns", "address": "10.0.0.2"}, {"type": "dns", "address": "192.168.50.2"}])
    );
}

#[test]
fn unused_nics_follow_the_policy() {
    let macs = [
        "aa:00:00:00:00:03",
        "aa:00:00:00:00:01",
        "aa:00:00:00:00:02",
    ];
    // A director network that happens to use the placeholder name.
    let nets = json!({"unused-nic-0": manual("10.1.0.4", "10.1.0.1", &[], true)});

    let mut case = Case::new(&macs, nets.clone());
    case.defaults.unused_nic_policy = UnusedNicPolicy::Loopback;
    case.defaults.networks_preconfigured = true;
    let drive = case.ok();
    let (_, settings, _) = decode_user_data(&drive);
    let n = settings.networks.unwrap();
    assert_eq!(n["unused-nic-0"].ip.as_deref(), Some("10.1.0.4"));
    assert_eq!(n["unused-nic-0"].mac.as_deref(), Some("aa:00:00:00:00:01"));
    for (name, ip, mac) in [
        ("unused-nic-1", "127.0.0.100", "aa:00:00:00:00:02"),
        ("unused-nic-2", "127.0.0.101", "aa:00:00:00:00:03"),
    ] {
        let p = &n[name];
        assert_eq!(p.ip.as_deref(), Some(ip));
        assert_eq!(p.mac.as_deref(), Some(mac));
        // A host address: the agent writes Address=<ip>/<bits of netmask> on the NIC.
        assert_eq!(p.netmask.as_deref(), Some("255.255.255.255"));
        assert_eq!(p.prefix.as_deref(), Some("32"));
        assert_eq!(p.use_dhcp, Some(false));
        assert!(p.gateway.is_none() && p.default.is_none());
    }
    assert!(
        n.values().all(|net| net.preconfigured == Some(true)),
        "preconfigured on every network"
    );

    let mut case = Case::new(&macs, nets.clone());
    case.defaults.unused_nic_policy = UnusedNicPolicy::Dhcp;
    let drive = case.ok();
    check_with_readers(&drive);
    let (raw, settings, _) = decode_user_data(&drive);
    let n = settings.networks.unwrap();
    assert_eq!(n.len(), 3);
    for name in ["unused-nic-1", "unused-nic-2"] {
        assert_eq!(n[name].kind.as_deref(), Some("dynamic"));
        assert_eq!(n[name].use_dhcp, Some(true));
        assert!(n[name].ip.is_none());
        assert!(raw["networks"][name].get("preconfigured").is_none());
    }
    let nd = json_file(&drive, OPENSTACK_NETWORK_DATA);
    assert_eq!(
        nd["networks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "ipv4_dhcp")
            .count(),
        2
    );

    // The default: nothing for unused NICs (the agent gives them DHCP by itself).
    assert_eq!(Defaults::default().unused_nic_policy, UnusedNicPolicy::None);
    let case = Case::new(&macs, nets);
    let drive = case.ok();
    let (_, settings, _) = decode_user_data(&drive);
    assert_eq!(
        settings.networks.unwrap().keys().collect::<Vec<_>>(),
        vec!["unused-nic-0"]
    );
}

#[test]
fn the_default_network_takes_the_pxe_nic() {
    let macs = [
        "52:54:00:00:05:01",
        "52:54:00:00:05:02",
        "52:54:00:00:05:03",
    ];
    let mut storage = manual("192.168.50.7", "192.168.50.1", &[], false);
    storage["default"] = json!([]);
    let public = manual("10.0.0.5", "10.0.0.1", &["10.0.0.2"], true);
    let nets = json!({"a-storage": storage, "z-public": public});

    // Only the last NIC boots by PXE: the gateway network goes there, the other takes the first.
    let mut case = Case::new(&macs, nets.clone());
    case.pxe = vec!["52:54:00:00:05:03".into()];
    let drive = case.ok();
    let (_, settings, _) = decode_user_data(&drive);
    let n = settings.networks.unwrap();
    assert_eq!(n["z-public"].mac.as_deref(), Some("52:54:00:00:05:03"));
    assert_eq!(n["a-storage"].mac.as_deref(), Some("52:54:00:00:05:01"));
    assert_eq!(
        drive.networks()["z-public"]["mac"],
        json!("52:54:00:00:05:03")
    );

    // Every port PXE-enabled (Ironic's default) or none known: names and MACs in order.
    for pxe in [macs.iter().map(|m| m.to_string()).collect(), vec![]] {
        let mut case = Case::new(&macs, nets.clone());
        case.pxe = pxe;
        let (_, settings, _) = decode_user_data(&case.ok());
        let n = settings.networks.unwrap();
        assert_eq!(n["a-storage"].mac.as_deref(), Some("52:54:00:00:05:01"));
        assert_eq!(n["z-public"].mac.as_deref(), Some("52:54:00:00:05:02"));
    }

    // An explicit MAC still wins over the PXE NIC.
    let mut pinned = nets.clone();
    pinned["z-public"]["mac"] = json!("52:54:00:00:05:01");
    let mut case = Case::new(&macs, pinned);
    case.pxe = vec!["52:54:00:00:05:03".into()];
    let (_, settings, _) = decode_user_data(&case.ok());
    let n = settings.networks.unwrap();
    assert_eq!(n["z-public"].mac.as_deref(), Some("52:54:00:00:05:01"));
    assert_eq!(n["a-storage"].mac.as_deref(), Some("52:54:00:00:05:02"));

    // A single network is the default one, PXE MAC written in upper case by someone.
    let mut case = Case::one_nic("52:54:00:00:05:01");
    case.macs = macs.iter().map(|m| m.to_string()).collect();
    case.pxe = vec!["52:54:00:00:05:02".to_uppercase()];
    let (_, settings, _) = decode_user_data(&case.ok());
    assert_eq!(
        settings.networks.unwrap()["default"].mac.as_deref(),
        Some("52:54:00:00:05:02")
    );
}

#[test]
fn dynamic_and_vip_networks() {
    let case = Case::new(
        &["52:54:00:00:01:01", "52:54:00:00:01:02"],
        json!({
            "dhcp": {"type": "dynamic", "dns": ["9.9.9.9"], "default": ["dns", "gateway"], "cloud_properties": {}},
            "floating": {"type": "vip", "ip": "203.0.113.7", "cloud_properties": {}},
        }),
    );
    let drive = case.ok();
    check_with_readers(&drive);
    let (raw, settings, _) = decode_user_data(&drive);
    let n = settings.networks.unwrap();
    assert_eq!(n["dhcp"].use_dhcp, Some(true));
    assert_eq!(n["dhcp"].mac.as_deref(), Some("52:54:00:00:01:01"));
    assert!(n["dhcp"].ip.is_none() && n["dhcp"].netmask.is_none());
    assert!(n["floating"].mac.is_none(), "vip networks get no MAC");
    assert_eq!(n["floating"].ip.as_deref(), Some("203.0.113.7"));
    assert!(raw["networks"]["floating"].get("mac").is_none());
    assert!(drive.networks()["floating"].get("mac").is_none());
    assert_eq!(raw["dns"]["nameserver"], json!(["9.9.9.9"]));
    let nd = json_file(&drive, OPENSTACK_NETWORK_DATA);
    let nd_nets = nd["networks"].as_array().unwrap();
    assert_eq!(
        nd_nets.len(),
        1,
        "vip and loopback placeholders are not in network_data"
    );
    assert_eq!(nd_nets[0]["type"], "ipv4_dhcp");
}

#[test]
fn registry_less_user_data_holds_the_full_settings() {
    let case = Case::one_nic("52:54:00:00:02:01");
    let drive = case.ok();
    let (raw, _, _) = decode_user_data(&drive);
    let mut expected = drive.settings().as_object().unwrap().clone();
    expected.insert("server".into(), json!({"name": NODE}));
    expected.insert("dns".into(), json!({"nameserver": ["10.0.0.2"]}));
    assert_eq!(raw, Value::Object(expected));
    assert!(raw.get("registry").is_none());
}

#[test]
fn registry_mode_user_data_points_at_the_registry() {
    let mut case = Case::new(
        &["52:54:00:00:03:01", "52:54:00:00:03:02"],
        json!({"default": manual("10.0.0.5", "10.0.0.1", &["10.0.0.2", "10.0.0.3"], true)}),
    );
    case.registry = Some("http://10.0.0.6:25777".into());
    let drive = case.ok();
    check_with_readers(&drive);
    let (raw, settings, user_data) = decode_user_data(&drive);
    assert_eq!(
        user_data.registry.unwrap().endpoint.as_deref(),
        Some("http://10.0.0.6:25777")
    );
    assert_eq!(user_data.server.unwrap().name.as_deref(), Some(NODE));
    // No nameservers: given some, v2.477.0 runs `dig @<nameserver>` on the endpoint's host
    // before any NIC is configured, and bootstrap stops. The networks carry them instead.
    assert!(user_data.dns.is_none(), "{raw}");
    assert!(raw.get("dns").is_none(), "{raw}");
    // Empty agent_id: registry-era agents then fetch their settings from the registry.
    assert_eq!(raw["agent_id"], json!(""));
    assert_eq!(settings.agent_id.as_deref(), Some(""));
    // Networks stay, so the agent can reach the registry; the settings themselves do not.
    let n = user_data.networks.unwrap();
    assert_eq!(n["default"].mac.as_deref(), Some("52:54:00:00:03:01"));
    assert_eq!(
        n["default"].dns.as_deref(),
        Some(&["10.0.0.2".to_string(), "10.0.0.3".to_string()][..])
    );
    assert_eq!(n.len(), 1);
    for key in ["env", "mbus", "blobstore", "disks", "vm", "ntp"] {
        assert!(raw.get(key).is_none(), "{key} must go to the registry only");
    }
    let text = String::from_utf8_lossy(drive.file(EC2_USER_DATA).unwrap()).to_string();
    for secret in secrets(&case.env) {
        assert!(
            !text.contains(&secret),
            "registry-mode user data leaks a secret"
        );
    }

    // What the caller PUTs to the registry: the full settings, agent_id set.
    let full: GoSettings = serde_json::from_value(drive.settings().clone()).unwrap();
    assert_eq!(full.agent_id.as_deref(), Some(AGENT_ID));
    assert_eq!(full.mbus.as_deref(), Some(MBUS));
    assert_eq!(drive.settings()["env"], case.env);
    assert_eq!(drive.settings()["networks"], raw["networks"]);
}

#[test]
fn env_is_copied_verbatim() {
    let case = Case::one_nic("52:54:00:00:04:01");
    let drive = case.ok();
    check_with_readers(&drive);
    let (raw, settings, _) = decode_user_data(&drive);
    assert_eq!(raw["env"], case.env);
    assert_eq!(drive.settings()["env"], case.env);
    let bosh = settings.env.unwrap().bosh.unwrap();
    let cert = bosh.mbus.unwrap().cert.unwrap();
    assert!(cert
        .certificate
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cert.private_key.unwrap().contains("PRIVATE KEY-----"));
    assert_eq!(
        bosh.password.as_deref(),
        case.env["bosh"]["password"].as_str()
    );
    assert_eq!(bosh.swap_size, None);
}

#[test]
fn a_large_env_spans_many_sectors() {
    // Operators put CA bundles into env.bosh (e.g. blobstore TLS); files then span many sectors.
    let mut case = Case::one_nic("52:54:00:00:04:02");
    let ca = case.env["bosh"]["mbus"]["cert"]["ca"]
        .as_str()
        .unwrap()
        .to_string();
    case.env["bosh"]["blobstores"][0]["options"]["tls"]["cert"]["ca"] = json!(ca.repeat(40));
    let drive = case.ok();
    let user_data = drive.file(EC2_USER_DATA).unwrap().len();
    assert!(user_data > 40 * 1024, "{user_data} bytes");
    check_with_readers(&drive);
    let (raw, _, _) = decode_user_data(&drive);
    assert_eq!(raw["env"], case.env);
}

#[test]
fn several_public_keys() {
    let mut case = Case::one_nic("52:54:00:00:05:01");
    case.defaults.public_keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@example".into(),
        "   ".into(),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQTwo two@example".into(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIThree three@example".into(),
    ];
    let drive = case.ok();
    check_with_readers(&drive);
    let md = decode_meta_data(&drive);
    let keys = md.public_keys.unwrap();
    assert_eq!(keys.len(), 3, "blank entries are skipped");
    assert!(keys["0"]["openssh-key"].ends_with("one@example"));
    assert!(keys["1"]["openssh-key"].ends_with("two@example"));
    assert!(keys["2"]["openssh-key"].ends_with("three@example"));
    let os = json_file(&drive, OPENSTACK_META_DATA);
    assert_eq!(os["uuid"], NODE);
    assert_eq!(os["public_keys"]["2"], keys["2"]["openssh-key"].as_str());
    assert_eq!(os["keys"].as_array().unwrap().len(), 3);
}

#[test]
fn optional_fields_missing() {
    // No dns, no gateway, no default, no cloud_properties, no type (old directors), no agent
    // section, null env.
    let mut case = Case::new(
        &["52:54:00:00:06:01"],
        json!({"private": {"ip": "10.2.0.5", "netmask": "255.255.0.0"}}),
    );
    case.agent = AgentConfig::default();
    case.env = Value::Null;
    let drive = case.ok();
    check_with_readers(&drive);
    let (raw, settings, user_data) = decode_user_data(&drive);
    for key in ["mbus", "blobstore", "dns"] {
        assert!(raw.get(key).is_none(), "{key} should be left out: {raw}");
    }
    assert_eq!(raw["ntp"], json!([]));
    assert!(user_data.dns.is_none());
    let n = &settings.networks.unwrap()["private"];
    assert_eq!(
        n.prefix.as_deref(),
        Some("16"),
        "prefix filled from netmask"
    );
    assert!(n.gateway.is_none());
    assert_eq!(n.use_dhcp, Some(false));
    let nd = json_file(&drive, OPENSTACK_NETWORK_DATA);
    assert_eq!(nd["networks"][0]["routes"], json!([]));
    assert_eq!(nd["services"], json!([]));
}

#[test]
fn netmask_and_prefix_are_reconciled() {
    let case = Case::new(
        &[
            "52:54:00:00:07:01",
            "52:54:00:00:07:02",
            "52:54:00:00:07:03",
        ],
        json!({
            "prefix_only": {"type": "manual", "ip": "10.3.0.5", "prefix": "22"},
            "numeric_prefix": {"type": "manual", "ip": "10.4.0.5", "netmask": "255.255.255.128", "prefix": 25},
            "v6": {"type": "manual", "ip": "fd00::5", "prefix": "64", "gateway": "fd00::1", "default": ["gateway"]},
        }),
    );
    let drive = case.ok();
    let (raw, settings, _) = decode_user_data(&drive);
    let n = settings.networks.unwrap();
    assert_eq!(n["prefix_only"].netmask.as_deref(), Some("255.255.252.0"));
    assert_eq!(n["numeric_prefix"].prefix.as_deref(), Some("25"));
    assert!(raw["networks"]["numeric_prefix"]["prefix"].is_string());
    assert_eq!(n["v6"].netmask.as_deref(), Some("ffff:ffff:ffff:ffff::"));
    let nd = json_file(&drive, OPENSTACK_NETWORK_DATA);
    let v6 = nd["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network_id"] == "v6")
        .unwrap();
    assert_eq!(v6["type"], "ipv6");
    assert_eq!(v6["routes"][0]["network"], "::");
}

fn assert_cloud_error(e: &CpiError, must_name: &[&str]) {
    assert_eq!(e.kind, ErrorKind::CloudError, "{e}");
    assert!(!e.ok_to_retry);
    for s in must_name {
        assert!(e.message.contains(s), "'{}' should name {s}", e.message);
    }
}

#[test]
fn mac_not_on_the_node() {
    let mut net = manual("10.0.0.5", "10.0.0.1", &[], true);
    net["mac"] = json!("52:54:00:FF:FF:FF");
    let e = Case::new(&["52:54:00:00:08:01"], json!({"web": net})).err();
    assert_cloud_error(&e, &["web", NODE, "52:54:00:ff:ff:ff", "52:54:00:00:08:01"]);

    let mut net = manual("10.0.0.5", "10.0.0.1", &[], true);
    net["cloud_properties"] = json!({"macs": ["52:54:00:99:00:01", "52:54:00:99:00:02"]});
    let e = Case::new(&["52:54:00:00:08:01"], json!({"web": net})).err();
    assert_cloud_error(
        &e,
        &[
            "web",
            NODE,
            "52:54:00:99:00:01",
            "52:54:00:99:00:02",
            "52:54:00:00:08:01",
        ],
    );

    let mut net = manual("10.0.0.5", "10.0.0.1", &[], true);
    net["mac"] = json!("not-a-mac");
    let e = Case::new(&["52:54:00:00:08:01"], json!({"web": net})).err();
    assert_cloud_error(&e, &["web", "not-a-mac"]);

    let e = Case::new(
        &["52:54:00:00:08:01", "+2:54:00:00:08:02"],
        json!({"web": manual("10.0.0.5", "10.0.0.1", &[], true)}),
    )
    .err();
    assert_cloud_error(&e, &[NODE, "+2:54:00:00:08:02"]);

    // Two networks on one NIC: the agent configures one network per NIC.
    let mut a = manual("10.0.0.5", "10.0.0.1", &[], true);
    a["mac"] = json!("52:54:00:00:08:01");
    let mut b = manual("10.0.1.5", "10.0.1.1", &[], false);
    b["cloud_properties"] = json!({"macs": ["52:54:00:00:08:01"]});
    let e = Case::new(
        &["52:54:00:00:08:01", "52:54:00:00:08:02"],
        json!({"a": a, "b": b}),
    )
    .err();
    assert_cloud_error(&e, &["b", "52:54:00:00:08:01"]);
}

#[test]
fn more_networks_than_nics() {
    let e = Case::new(
        &["52:54:00:00:09:01"],
        json!({
            "a": manual("10.0.0.5", "10.0.0.1", &[], true),
            "b": manual("10.0.1.5", "10.0.1.1", &[], false),
            "vip": {"type": "vip", "ip": "203.0.113.9"},
        }),
    )
    .err();
    assert_cloud_error(&e, &["b", NODE, "52:54:00:00:09:01", "1 NIC", "2 non-vip"]);
}

#[test]
fn bad_netmask_or_prefix() {
    let cases = [
        (
            json!({"ip": "10.0.0.5", "netmask": "255.255.255.0", "prefix": "16"}),
            vec!["255.255.255.0", "16", "disagree"],
        ),
        (
            json!({"ip": "10.0.0.5", "netmask": "255.0.255.0"}),
            vec!["255.0.255.0", "contiguous"],
        ),
        (json!({"ip": "10.0.0.5", "prefix": "33"}), vec!["33"]),
        (
            json!({"ip": "10.0.0.5", "prefix": "twenty"}),
            vec!["twenty"],
        ),
        (
            json!({"ip": "10.0.0.5"}),
            vec!["neither netmask nor prefix"],
        ),
        (
            json!({"ip": "10.0.0.5", "netmask": "ffff:ffff::"}),
            vec!["same IP family"],
        ),
        (json!({"ip": "ten", "prefix": "24"}), vec!["'ten'"]),
        (json!({"netmask": "255.255.255.0"}), vec!["no ip"]),
        (
            json!({"ip": "10.0.0.5", "prefix": "24", "gateway": "10.0.0.x"}),
            vec!["10.0.0.x"],
        ),
    ];
    for (mut net, words) in cases {
        net["type"] = json!("manual");
        let e = Case::new(&["52:54:00:00:0a:01"], json!({"office": net})).err();
        let mut all = words.clone();
        all.push("office");
        assert_cloud_error(&e, &all);
    }
}

#[test]
fn wrong_json_types_are_refused_with_the_field_named() {
    let cases = [
        (
            json!({"type": "manual", "ip": "10.0.0.5", "prefix": "24", "dns": "10.0.0.2"}),
            "dns",
        ),
        (
            json!({"type": "manual", "ip": "10.0.0.5", "prefix": "24", "default": [1]}),
            "default",
        ),
        (
            json!({"type": "manual", "ip": "10.0.0.5", "prefix": "24", "use_dhcp": "no"}),
            "use_dhcp",
        ),
        (
            json!({"type": "manual", "ip": "10.0.0.5", "prefix": 24.5}),
            "prefix",
        ),
        (
            json!({"type": "bridge", "ip": "10.0.0.5", "prefix": "24"}),
            "bridge",
        ),
        (
            json!({"type": "manual", "ip": "10.0.0.5", "prefix": "24", "cloud_properties": {"macs": 5}}),
            "macs",
        ),
    ];
    for (net, word) in cases {
        let e = Case::new(&["52:54:00:00:0b:01"], json!({"n1": net})).err();
        assert!(
            e.message.contains(word) && e.message.contains("n1"),
            "{word}: {e}"
        );
    }
    let mut case = Case::one_nic("52:54:00:00:0b:01");
    case.env = json!("not an env");
    assert_eq!(case.err().kind, ErrorKind::CpiError);

    let mut case = Case::one_nic("52:54:00:00:0b:01");
    case.persistent = obj(json!({"disk-1": 3}));
    let e = case.err();
    assert!(e.message.contains("disk-1"), "{e}");

    let mut case = Case::one_nic("52:54:00:00:0b:01");
    case.agent.blobstore = Some(json!({"provider": "dav", "options": "x"}));
    let e = case.err();
    assert!(e.message.contains("agent.blobstore.options"), "{e}");
}

#[test]
fn empty_identifiers_are_refused() {
    let case = Case::one_nic("52:54:00:00:0f:01");
    let env = case.env.clone();
    for (agent_id, node, registry, word) in [
        ("", NODE, None, "agent_id"),
        (AGENT_ID, " ", None, "node uuid"),
        (AGENT_ID, NODE, Some(""), "registry endpoint"),
    ] {
        let e = build(&DriveInput {
            agent_id,
            node_uuid: node,
            node_macs: &case.macs,
            pxe_macs: &[],
            networks: &case.networks,
            env: &env,
            agent: &case.agent,
            defaults: &case.defaults,
            disks: &DiskLayout::from_defaults(&case.defaults),
            persistent_disks: &case.persistent,
            registry_endpoint: registry,
        })
        .expect_err(word);
        assert_eq!(e.kind, ErrorKind::CpiError);
        assert!(e.message.contains(word), "{e}");
    }
}

#[test]
fn persistent_disk_hints_and_ephemeral_disk_pass_through() {
    let mut case = Case::one_nic("52:54:00:00:0c:01");
    case.persistent = obj(json!({
        "disk-abc": {"path": "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"},
        "disk-old": "/dev/sdc",
    }));
    case.defaults.ephemeral_disk = Some("/dev/sdb".into());
    case.defaults.system_disk = "/dev/nvme0n1".into();
    let drive = case.ok();
    let (raw, settings, _) = decode_user_data(&drive);
    let disks = settings.disks.unwrap();
    assert_eq!(disks.system.as_deref(), Some("/dev/nvme0n1"));
    assert_eq!(disks.ephemeral, Some(json!("/dev/sdb")));
    assert_eq!(
        raw["disks"]["persistent"],
        Value::Object(case.persistent.clone())
    );
}

#[test]
fn secrets_stay_out_of_logs_debug_and_errors() {
    let rec = recorder();
    let case = Case::new(
        &["52:54:00:00:0d:01", "52:54:00:00:0d:02"],
        json!({"default": manual("10.0.0.5", "10.0.0.1", &["10.0.0.2"], true)}),
    );
    let drive = case.ok();
    let mut registry = Case::one_nic("52:54:00:00:0d:01");
    registry.registry = Some("http://registry:reg-secret-pw@10.0.0.6:25777".into());
    let reg_drive = registry.ok();
    let mut bad = Case::new(
        &["52:54:00:00:0d:01"],
        json!({"a": manual("10.0.0.5", "10.0.0.1", &[], true), "b": manual("10.0.1.5", "10.0.1.1", &[], false)}),
    );
    bad.defaults.public_keys = vec!["ssh-ed25519 AAAA key".into()];
    let err = bad.err();

    let user_data: Value = serde_json::from_slice(reg_drive.file(EC2_USER_DATA).unwrap()).unwrap();
    let shown = [
        format!("{drive:?}"),
        format!("{reg_drive:?}"),
        configdrive::redacted(drive.settings()).to_string(),
        configdrive::redacted(&json_file(&drive, EC2_USER_DATA)).to_string(),
        configdrive::redacted(&user_data).to_string(),
        err.to_string(),
        rec.0.lock().unwrap().join("\n"),
    ];
    let mut all_secrets = secrets(&case.env);
    all_secrets.push("reg-secret-pw".into());
    for text in &shown {
        for secret in &all_secrets {
            assert!(!text.contains(secret.as_str()), "secret shown in: {text}");
        }
    }
    // Redaction keeps what a person needs.
    let r = configdrive::redacted(drive.settings());
    assert_eq!(r["networks"], drive.settings()["networks"]);
    assert_eq!(r["agent_id"], AGENT_ID);
    assert!(configdrive::redacted(&user_data)["registry"]["endpoint"]
        .as_str()
        .unwrap()
        .contains("10.0.0.6:25777"));
    // And the log did say something about the build.
    assert!(rec.0.lock().unwrap().iter().any(|l| l.contains(NODE)));
}

#[test]
fn iso_sizes_are_exposed_and_small() {
    let case = Case::one_nic("52:54:00:00:0e:01");
    let drive = case.ok();
    assert_eq!(drive.iso().len() % 2048, 0, "whole sectors");
    assert!(drive.gzipped_size() < Defaults::default().configdrive_inline_max_bytes);
    assert!(drive.gzipped_size() < drive.iso().len());
}

// ---------------------------------------------------------------------------------------------
// Properties: whatever the director or Ironic send, the result is a drive or an error.

mod properties {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-40i64..300).prop_map(|n| json!(n)),
            Just(json!(24.5)),
            prop_oneof![
                Just("manual"),
                Just("dynamic"),
                Just("vip"),
                Just(""),
                Just("10.0.0.5"),
                Just("10.0.0.1"),
                Just("255.255.255.0"),
                Just("255.0.255.0"),
                Just("24"),
                Just("33"),
                Just("fd00::5"),
                Just("ffff:ffff:ffff:ffff::"),
                Just("52:54:00:00:00:01"),
                Just("52-54-00-00-00-02"),
                Just("dns"),
                Just("gateway"),
            ]
            .prop_map(|s| Value::String(s.to_string())),
            "[0-9a-fA-F:.+-]{0,18}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map(
                    prop_oneof![Just("macs".to_string()), "[a-z]{1,4}"],
                    inner,
                    0..3
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn network() -> impl Strategy<Value = Value> {
        let keys = [
            "type",
            "ip",
            "netmask",
            "prefix",
            "gateway",
            "dns",
            "default",
            "mac",
            "cloud_properties",
            "use_dhcp",
        ];
        prop_oneof![
            vec((0..keys.len(), value()), 0..8).prop_map(move |fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (keys[k].to_string(), v))
                        .collect(),
                )
            }),
            value(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn any_input_gives_a_drive_or_an_error(
            networks in btree_map("[a-z-]{1,12}", network(), 0..4),
            macs in vec(prop_oneof![
                Just("52:54:00:00:00:01".to_string()),
                Just("52:54:00:00:00:02".to_string()),
                "[0-9a-fA-F:+-]{0,17}",
            ], 0..4),
            env in value(),
            policy in prop_oneof![
                Just(UnusedNicPolicy::Loopback),
                Just(UnusedNicPolicy::Dhcp),
                Just(UnusedNicPolicy::None),
            ],
        ) {
            let mut case = Case::new(&[], Value::Object(networks.into_iter().collect()));
            case.macs = macs;
            case.env = env;
            case.defaults.unused_nic_policy = policy;
            match case.build() {
                Ok(drive) => {
                    // Whatever was accepted decodes as the agent's types.
                    decode_user_data(&drive);
                    decode_meta_data(&drive);
                    for net in drive.settings()["networks"].as_object().unwrap().values() {
                        if let Some(mac) = net.get("mac").and_then(Value::as_str) {
                            let normal = configdrive::normalize_mac(mac);
                            prop_assert_eq!(normal.as_deref(), Some(mac));
                        }
                    }
                }
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
        }

        #[test]
        fn every_mac_spelling_normalises(bytes in any::<[u8; 6]>(), upper in any::<bool>(), sep in prop_oneof![Just(":"), Just("-"), Just("")]) {
            let canonical = bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            let mut spelled = bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(sep);
            if upper {
                spelled = spelled.to_uppercase();
            }
            prop_assert_eq!(configdrive::normalize_mac(&spelled), Some(canonical));
        }
    }
}
