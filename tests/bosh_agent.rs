//! The config drive as the real BOSH agent takes it.
//!
//! The agent binary (`bosh-agent`, see `ironic_cpi_testkit::bosh_tools`) runs with its `dummy` platform, which
//! changes nothing on this machine, and a `File` settings source holding the drive's
//! `ec2/latest/user-data` as `isoinfo` reads it from the ISO: that is exactly how current agents
//! decode the config drive's user data (`ConfigDriveSettingsSource.Settings` and
//! `FileSettingsSource.Settings` both `json.Unmarshal` it into `settings.Settings`). The agent
//! then starts its message bus with `env.bosh.mbus.cert`, and writes the settings as it
//! understood them to `<base>/bosh/settings.json`.
//!
//! What the dummy platform skips, writing the NIC configuration, is mirrored from the agent's
//! source (`platform/net/interface_configuration_creator.go`, `ubuntu_net_manager.go`,
//! `settings.NetmaskToCIDR`) on the settings the agent wrote, and the resulting addresses are
//! put on NICs in a network namespace of their own, where the kernel shows what they do to the
//! VM's loopback network.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tempfile::TempDir;

use ironic_cpi::config::{AgentConfig, Defaults, Secret, UnusedNicPolicy};
use ironic_cpi::configdrive::{build, ConfigDrive, DiskLayout, DriveInput};
use ironic_cpi_testkit::process::{free_port, wait_for_tcp};
use ironic_cpi_testkit::{bosh_tools, certs};

const NODE: &str = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
const AGENT_ID: &str = "8a9b0c1d-2e3f-4a5b-8c7d-6e5f4a3b2c1d";
/// The node's NICs; only the last one boots by PXE.
const MACS: [&str; 4] = [
    "52:54:00:0a:00:01",
    "52:54:00:0a:00:02",
    "52:54:00:0a:00:03",
    "52:54:00:0a:00:04",
];
const PXE_MAC: &str = "52:54:00:0a:00:04";
/// What the VM's resolver listens on (systemd-resolved's stub on noble stemcells).
const RESOLVED_STUB: &str = "127.0.0.53";

fn networks() -> Map<String, Value> {
    let net = |ip: &str, gw: &str, default: Value| {
        json!({"type": "manual", "ip": ip, "netmask": "255.255.255.0", "prefix": "24",
               "gateway": gw, "dns": ["10.0.0.2"], "default": default, "cloud_properties": {}})
    };
    let nets = json!({
        "a-storage": net("192.168.50.7", "192.168.50.1", json!([])),
        "z-public": net("10.0.0.5", "10.0.0.1", json!(["dns", "gateway"])),
    });
    nets.as_object().unwrap().clone()
}

/// create_vm's env as the director sends it, with the certificate from `cert`.
fn env(cert: Value) -> Value {
    json!({"bosh": {"mbus": {"cert": cert}, "password": "$6$salt$hash",
                    "group": "d-dep-web", "groups": ["d", "dep", "web"]}})
}

fn real_cert(dir: &Path) -> Value {
    certs::mbus_cert(dir, AGENT_ID, "127.0.0.1").expect("openssl makes certificates")
}

/// What the lab sent before: PEM armour around nothing.
fn placeholder_cert() -> Value {
    json!({"ca": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
           "certificate": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
           "private_key": "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----\n"})
}

fn build_drive(mbus: &str, env: &Value, policy: UnusedNicPolicy, blobs: &Path) -> ConfigDrive {
    let agent = AgentConfig {
        mbus: Some(Secret::new(mbus)),
        ntp: vec![],
        // The agent refuses to start without a blobstore it can reach.
        blobstore: Some(json!({"provider": "local",
                               "options": {"blobstore_path": blobs.to_str().unwrap()}})),
    };
    let defaults = Defaults {
        unused_nic_policy: policy,
        ..Defaults::default()
    };
    let macs: Vec<String> = MACS.iter().map(|m| m.to_string()).collect();
    build(&DriveInput {
        agent_id: AGENT_ID,
        node_uuid: NODE,
        node_macs: &macs,
        pxe_macs: &[PXE_MAC.to_string()],
        networks: &networks(),
        env,
        agent: &agent,
        defaults: &defaults,
        disks: &DiskLayout::from_defaults(&defaults),
        persistent_disks: &Map::new(),
        registry_endpoint: None,
    })
    .expect("drive builds")
}

/// `ec2/latest/user-data` as a reader of the ISO sees it (Rock Ridge names, like the agent's
/// mount).
fn user_data_from_iso(drive: &ConfigDrive, dir: &Path) -> Vec<u8> {
    let iso = dir.join("config-2.iso");
    std::fs::write(&iso, drive.iso()).unwrap();
    let out = Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&iso)
        .args(["-x", "/ec2/latest/user-data"])
        .output()
        .expect("isoinfo (Debian genisoimage; scripts/setup installs it)");
    assert!(!out.stdout.is_empty(), "no ec2/latest/user-data on the ISO");
    out.stdout
}

/// The real agent on `user_data`, and the directory it runs in.
struct Agent {
    agent: bosh_tools::Agent,
    _dir: TempDir,
}

impl Agent {
    fn start(user_data: &[u8]) -> Agent {
        let dir = TempDir::new().unwrap();
        let agent =
            bosh_tools::Agent::start(dir.path(), user_data).unwrap_or_else(|e| panic!("{e}"));
        Agent { agent, _dir: dir }
    }

    fn log(&self) -> String {
        self.agent.log()
    }

    fn errors(&self) -> String {
        self.agent.errors()
    }

    fn settings(&self) -> Value {
        self.agent.settings().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait until the log shows `line`; Err with the agent's errors when it exits first.
    fn wait_for_log(&mut self, line: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.log().contains(line) {
                return Ok(());
            }
            if let Some(status) = self.agent.process.try_wait() {
                // The last lines may land after the exit is seen.
                if self.log().contains(line) {
                    return Ok(());
                }
                return Err(format!("the agent exited ({status}):\n{}", self.errors()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no '{line}' in the agent's log:\n{}",
                    self.errors()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `POST /agent` on the agent's HTTPS mbus (how `bosh create-env` talks to it), trusting only
/// `ca`: the handshake proves the agent serves the drive's certificate, signed by that CA.
fn agent_call(port: u16, password: &str, ca: &str, method: &str) -> Value {
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    client
        .post(format!("https://127.0.0.1:{port}/agent"))
        .basic_auth("mbus", Some(password))
        .json(&json!({"method": method, "arguments": [], "reply_to": "test"}))
        .send()
        .unwrap_or_else(|e| panic!("agent mbus: {e:?}"))
        .json()
        .unwrap()
}

/// The agent running on this drive over HTTPS mbus, answering `ping`; its decoded settings.
fn boot_agent(policy: UnusedNicPolicy) -> Value {
    let dir = TempDir::new().unwrap();
    let cert = real_cert(dir.path());
    let port = free_port().unwrap();
    let password = "mbus-pw";
    let mbus = format!("https://mbus:{password}@127.0.0.1:{port}");
    let drive = build_drive(&mbus, &env(cert.clone()), policy, &dir.path().join("blobs"));
    let mut agent = Agent::start(&user_data_from_iso(&drive, dir.path()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_tcp(
        addr,
        Duration::from_secs(60),
        Some(&mut agent.agent.process),
    )
    .unwrap_or_else(|e| panic!("the agent's mbus never listened: {e}\n{}", agent.errors()));
    let answer = agent_call(port, password, cert["ca"].as_str().unwrap(), "ping");
    assert_eq!(answer, json!({"value": "pong"}), "{}", agent.errors());
    agent.settings()
}

#[test]
fn the_agent_boots_from_the_drive_and_serves_its_mbus_certificate() {
    let settings = boot_agent(UnusedNicPolicy::None);
    assert_eq!(settings["agent_id"], json!(AGENT_ID));
    assert_eq!(settings["vm"]["name"], json!(NODE));
    let nets = settings["networks"].as_object().unwrap();
    // The gateway network on the PXE NIC, the other on the first; the two NICs left over are
    // not in the settings: the agent gives them DHCP.
    assert_eq!(nets.len(), 2, "{nets:?}");
    assert_eq!(nets["z-public"]["mac"], json!(PXE_MAC));
    assert_eq!(nets["z-public"]["default"], json!(["dns", "gateway"]));
    assert_eq!(nets["a-storage"]["mac"], json!(MACS[0]));
    let nics = interfaces(&settings);
    assert_eq!(
        nics,
        vec![
            (MACS[0].into(), Nic::Static("192.168.50.7/24".into())),
            (MACS[1].into(), Nic::Dhcp),
            (MACS[2].into(), Nic::Dhcp),
            (PXE_MAC.into(), Nic::Static("10.0.0.5/24".into())),
        ]
    );
}

#[test]
fn loopback_placeholders_leave_the_vms_loopback_network_alone() {
    let settings = boot_agent(UnusedNicPolicy::Loopback);
    let nics = interfaces(&settings);
    assert_eq!(
        nics,
        vec![
            (MACS[0].into(), Nic::Static("192.168.50.7/24".into())),
            (MACS[1].into(), Nic::Static("127.0.0.100/32".into())),
            (MACS[2].into(), Nic::Static("127.0.0.101/32".into())),
            (PXE_MAC.into(), Nic::Static("10.0.0.5/24".into())),
        ]
    );
    let addresses: Vec<String> = nics
        .iter()
        .filter_map(|(_, nic)| match nic {
            Nic::Static(a) => Some(a.clone()),
            Nic::Dhcp => None,
        })
        .collect();
    let route = route_to_resolver_with(&addresses)
        .unwrap_or_else(|e| panic!("with the agent's addresses {addresses:?}: {e}"));
    assert!(
        route.contains("local") && route.contains("dev lo"),
        "{route}"
    );

    // The check sees the defect it guards against: the placeholders as they used to be (/24).
    let old: Vec<String> = addresses.iter().map(|a| a.replace("/32", "/24")).collect();
    let broken = route_to_resolver_with(&old);
    assert!(
        broken.as_ref().is_err() || !broken.as_ref().unwrap().contains("dev lo"),
        "with {old:?}: {broken:?}"
    );
    eprintln!("127.0.0.53 with the /24 placeholders of before: {broken:?}");
}

#[test]
fn the_agent_takes_the_directors_nats_certificates() {
    let dir = TempDir::new().unwrap();
    // Nothing listens there: the agent only gets as far as connecting.
    let port = free_port().unwrap();
    let mbus = format!("nats://nats:nats-pw@127.0.0.1:{port}");
    let blobs = dir.path().join("blobs");

    let drive = build_drive(
        &mbus,
        &env(real_cert(dir.path())),
        UnusedNicPolicy::None,
        &blobs,
    );
    let mut agent = Agent::start(&user_data_from_iso(&drive, dir.path()));
    agent
        .wait_for_log("Attempting to connect to NATS")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!agent.log().contains("Failed to load Mbus CA cert"));

    // The placeholders the lab sent before: refused before any connection.
    let drive = build_drive(
        &mbus,
        &env(placeholder_cert()),
        UnusedNicPolicy::None,
        &blobs,
    );
    let mut agent = Agent::start(&user_data_from_iso(&drive, dir.path()));
    let e = agent
        .wait_for_log("Attempting to connect to NATS")
        .expect_err("placeholder PEMs must be refused");
    assert!(e.contains("Failed to load Mbus CA cert"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The agent's NIC configuration, mirrored from its source

#[derive(Debug, Clone, PartialEq)]
enum Nic {
    /// `Address=` of the agent's systemd-networkd file.
    Static(String),
    Dhcp,
}

/// What the agent writes for each NIC (sorted by MAC), from the settings it decoded:
/// `createMultipleInterfaceConfigurations` (every NIC gets the networks with its MAC, or the
/// zero network, which is DHCP), `createInterfaceConfiguration` (DHCP when `IsDHCP()` or no
/// MAC, else static) and `writeStaticInterfaceConfiguration` (`Address=<ip>/<NetmaskToCIDR>`).
fn interfaces(settings: &Value) -> Vec<(String, Nic)> {
    let networks = settings["networks"].as_object().unwrap();
    MACS.iter()
        .map(|mac| {
            let on_nic: Vec<&Value> = networks
                .values()
                .filter(|n| n["type"] != "vip" && n["mac"] == json!(mac))
                .collect();
            let nic = match on_nic.as_slice() {
                [] => Nic::Dhcp,
                [net] if is_dhcp(net) => Nic::Dhcp,
                [net] => Nic::Static(format!(
                    "{}/{}",
                    net["ip"].as_str().unwrap(),
                    netmask_to_cidr(net["netmask"].as_str().unwrap())
                )),
                more => panic!("{} networks on {mac}: {more:?}", more.len()),
            };
            (mac.to_string(), nic)
        })
        .collect()
}

/// `Network.IsDHCP`.
fn is_dhcp(net: &Value) -> bool {
    let text = |k: &str| net[k].as_str().unwrap_or("");
    if text("type") == "dynamic" || net["use_dhcp"] == json!(true) {
        return true;
    }
    net["resolved"] == json!(true) || text("ip").is_empty() || text("netmask").is_empty()
}

/// `settings.NetmaskToCIDR` for IPv4: the number of leading ones.
fn netmask_to_cidr(netmask: &str) -> u32 {
    let bits = u32::from(netmask.parse::<Ipv4Addr>().unwrap());
    assert_eq!(bits.leading_ones() + bits.trailing_zeros(), 32, "{netmask}");
    bits.leading_ones()
}

// ---------------------------------------------------------------------------------------------
// The kernel's view, in a network namespace of its own

/// Put `addresses` on NICs of a fresh network namespace (as systemd-networkd does with the
/// agent's `Address=` lines) and ask the kernel how it reaches the resolver's stub.
fn route_to_resolver_with(addresses: &[String]) -> Result<String, String> {
    let mut script = String::from("set -e\nip link set lo up\n");
    for (i, a) in addresses.iter().enumerate() {
        script.push_str(&format!(
            "ip link add nic{i} type veth peer name peer{i}\nip link set nic{i} up\n\
             ip addr add {a} dev nic{i}\n"
        ));
    }
    script.push_str(&format!("ip route get {RESOLVED_STUB}\n"));
    // Root may make a namespace directly; anyone else needs a user namespace around it.
    let mut last = String::new();
    for unshare in [&["-n"][..], &["-r", "-n"][..]] {
        let out = Command::new("unshare")
            .args(unshare)
            .args(["sh", "-c", &script])
            .output()
            .expect("unshare (util-linux)");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if !stderr.contains("unshare failed") && !stderr.contains("Operation not permitted") {
            return Err(stderr);
        }
        last = stderr;
    }
    panic!(
        "this test needs a network namespace of its own (root, or unprivileged user \
         namespaces): {last}"
    );
}
