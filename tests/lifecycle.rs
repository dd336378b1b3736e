//! The node pool lifecycle and persistent disks, against the real Ironic (fake-hardware) and the
//! real companion server, through the real `ironic_cpi` binary, one process per call as the
//! director runs it.
//!
//! Tests share one lab; each uses its own resource_class (and MAC byte) so that they never see
//! each other's nodes, and checks that the pool is exactly as it was after every path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use ironic_cpi::ironic::IronicClient;
use ironic_cpi_testkit::certs;
use ironic_cpi_testkit::cpi::{make_stemcell_image, node_of, CallOutcome, CpiLab};
use ironic_cpi_testkit::ironic::{enroll_node, lab_mac, EnrollTarget, IronicLabOptions, NodeSpec};

mod common;

struct Shared {
    lab: CpiLab,
    stemcell: String,
    image_sha256: String,
}

fn shared() -> &'static Shared {
    static LAB: OnceLock<Shared> = OnceLock::new();
    LAB.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let lab = common::start_lab(IronicLabOptions::default(), true, false);
        let dir = tempfile::tempdir().unwrap();
        let image = make_stemcell_image(dir.path(), 3 * 1024 * 1024 + 17, true).unwrap();
        let image_sha256 = root_img_sha256(&image);
        let out = lab.call(
            "create_stemcell",
            json!([image.to_str().unwrap(), {"name": "bosh-openstack-kvm-ubuntu-jammy-go_agent",
                   "version": "1.406", "disk_format": "qcow2", "os_distro": "ubuntu"}]),
            2,
            None,
        );
        let stemcell = out.ok().as_str().unwrap().to_string();
        Shared {
            lab,
            stemcell,
            image_sha256,
        }
    })
}

fn root_img_sha256(tarball: &Path) -> String {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut data = Vec::new();
    entry.read_to_end(&mut data).unwrap();
    hex::encode(Sha256::digest(&data))
}

fn client() -> IronicClient {
    shared().lab.client().unwrap()
}

/// Each test's nodes: resource class `rc`, MACs from its own byte.
fn enroll(
    rc: &str,
    byte: u8,
    index: u16,
    nics: u8,
    f: impl FnOnce(&mut NodeSpec),
) -> (String, Vec<String>) {
    let mut spec = NodeSpec::in_pool(rc, byte, index, nics);
    f(&mut spec);
    let node = enroll_node(&client(), &spec).unwrap();
    (node.uuid, spec.macs)
}

/// Everything that must be as it was after a VM comes and goes.
fn pool_state(rc: &str) -> Vec<Value> {
    ironic_cpi_testkit::ironic::pool_state(&client(), rc)
}

/// create_vm's env as the director sends it: a real mbus CA, certificate and key (made once).
fn env() -> Value {
    static ENV: OnceLock<Value> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cert = certs::mbus_cert(dir.path(), "lifecycle-agent", "127.0.0.1").unwrap();
        json!({"bosh": {
            "mbus": {"cert": cert},
            "password": "$6$salt$hashedpassword",
            "group": "lab-director-dep-web", "groups": ["lab-director", "dep", "web"]}})
    })
    .clone()
}

fn manual_network(ip: &str, mac: Option<&str>) -> Value {
    let mut net = json!({"type": "manual", "ip": ip, "netmask": "255.255.255.0",
        "gateway": "10.0.16.1", "dns": ["10.0.16.2"], "default": ["dns", "gateway"],
        "prefix": "24", "cloud_properties": {}});
    if let Some(mac) = mac {
        net["cloud_properties"]["macs"] = json!([mac]);
    }
    net
}

fn create_vm(cloud_properties: Value, networks: Value, disk_cids: Value, api: u32) -> CallOutcome {
    let s = shared();
    s.lab.call(
        "create_vm",
        json!([
            uuid::Uuid::new_v4().to_string(),
            s.stemcell,
            cloud_properties,
            networks,
            disk_cids,
            env()
        ]),
        api,
        Some(3),
    )
}

/// The VM record create_vm left on a node.
fn record_of(node: &ironic_cpi::ironic::Node) -> ironic_cpi::pool::record::VmRecord {
    ironic_cpi::pool::record::VmRecord::read(node).expect("a VM record")
}

fn call(method: &str, args: Value) -> CallOutcome {
    shared().lab.call(method, args, 2, Some(3))
}

/// The config drive create_vm gave Ironic, read with isoinfo.
fn drive_file(node: &str, path: &str) -> Vec<u8> {
    let (_iso, _dir, iso_path) = shared().lab.inline_config_drive(node);
    let label = std::process::Command::new("isoinfo")
        .args(["-d", "-i"])
        .arg(&iso_path)
        .output()
        .expect("isoinfo (Debian genisoimage) is needed: run scripts/setup");
    assert!(String::from_utf8_lossy(&label.stdout).contains("Volume id: config-2"));
    let out = std::process::Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&iso_path)
        .args(["-x", path])
        .output()
        .unwrap();
    assert!(
        !out.stdout.is_empty(),
        "{path} is missing from the config drive"
    );
    out.stdout
}

#[test]
fn create_by_mac_deploys_and_delete_restores_the_pool() {
    let rc = "lc-mac";
    let _a = enroll(rc, 0x11, 0, 2, |_| {});
    let (b, b_macs) = enroll(rc, 0x11, 1, 2, |_| {});
    let before = pool_state(rc);

    let networks = json!({"default": manual_network("10.0.16.21", Some(&b_macs[1]))});
    let out = create_vm(
        json!({"resource_class": rc, "macs": [b_macs[1]]}),
        networks,
        json!([]),
        2,
    );
    let result = out.ok().clone();
    let vm = result[0].as_str().unwrap().to_string();
    assert_eq!(node_of(&vm), b, "the node owning the MAC");
    assert_eq!(result[1]["default"]["mac"], json!(b_macs[1]));

    let node = client().get_node(&b).unwrap();
    assert_eq!(node.provision_state.as_deref(), Some("active"));
    assert_eq!(
        node.instance_uuid.as_deref(),
        Some(vm.split(':').nth(1).unwrap())
    );
    let s = shared();
    let image_url = node.instance_info["image_source"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        image_url,
        format!("{}/images/{}/root.img", s.lab.server.url, s.stemcell)
    );
    assert_eq!(node.instance_info["image_os_hash_algo"], json!("sha256"));
    assert_eq!(
        node.instance_info["image_os_hash_value"],
        json!(s.image_sha256)
    );
    // The image Ironic will download is the stemcell's root.img, byte for byte.
    let image = reqwest::blocking::get(&image_url).unwrap().bytes().unwrap();
    assert_eq!(hex::encode(Sha256::digest(&image)), s.image_sha256);

    let user_data: Value =
        serde_json::from_slice(&drive_file(&b, "/ec2/latest/user-data")).unwrap();
    assert_eq!(user_data["agent_id"], out_agent_id(&out));
    assert_eq!(user_data["networks"]["default"]["mac"], json!(b_macs[1]));
    assert_eq!(user_data["env"], env(), "env is copied verbatim");
    assert_eq!(
        user_data["mbus"],
        json!("nats://nats:nats-password@10.0.0.6:4222")
    );
    assert!(
        user_data.get("registry").is_none(),
        "registry-less: no registry endpoint"
    );
    // The unused NIC is left to the agent, which gives it DHCP (unused_nic_policy none).
    let networks = user_data["networks"].as_object().unwrap();
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert!(
        networks.values().all(|n| n["mac"] != json!(b_macs[0])),
        "{networks:?}"
    );
    let meta: Value =
        serde_json::from_slice(&drive_file(&b, "/ec2/latest/meta-data.json")).unwrap();
    assert_eq!(meta["instance-id"], json!(b));

    assert_eq!(call("has_vm", json!([vm])).ok(), &json!(true));
    call(
        "set_vm_metadata",
        json!([vm, {"director": "lab", "deployment": "dep", "instance_group": "lcmac-router",
        "index": "0", "id": "7c5d3bd8", "name": "lcmac-router/7c5d3bd8"}]),
    )
    .ok();
    let node = client().get_node(&b).unwrap();
    assert_eq!(node.name.as_deref(), Some("lcmac-router-0"));
    assert_eq!(node.extra["bosh_metadata"]["deployment"], json!("dep"));
    // Compilation VMs have few keys: tolerated, and the name is left alone.
    call(
        "set_vm_metadata",
        json!([vm, {"director": "lab", "compiling": "golang"}]),
    )
    .ok();
    call("reboot_vm", json!([vm])).ok();

    call("delete_vm", json!([vm])).ok();
    assert_eq!(call("has_vm", json!([vm])).ok(), &json!(false));
    assert_eq!(pool_state(rc), before, "the pool is exactly as it was");
    // Idempotent: a second delete and a delete of a node that never existed succeed.
    call("delete_vm", json!([vm])).ok();
    let nowhere = "00000000-0000-4000-8000-000000000000:01937b2e-6b5c-7d3e-8f00-1a2b3c4d5e6f";
    call("delete_vm", json!([nowhere])).ok();
    assert_eq!(call("has_vm", json!([nowhere])).ok(), &json!(false));
    // A cid that is not this CPI's (a bare node UUID, a name) is refused, not guessed at.
    for foreign in [b.as_str(), "node-1", ".."] {
        let out = call("delete_vm", json!([foreign]));
        out.assert_error("Bosh::Clouds::CloudError");
    }
    let out = call("reboot_vm", json!([vm]));
    out.assert_error("Bosh::Clouds::VMNotFound");
}

fn out_agent_id(out: &ironic_cpi_testkit::cpi::CallOutcome) -> Value {
    // The agent id is in the stderr log of the call only as part of the request; read it back
    // from the node instead.
    let node = client().get_node(node_of(&out.vm_cid())).unwrap();
    json!(record_of(&node).agent_id)
}

#[test]
fn best_fit_resource_class_and_traits_select_nodes() {
    let rc = "lc-fit";
    let (_small, _) = enroll(rc, 0x12, 0, 1, |s| {
        s.cpus = 4;
        s.memory_mb = 8192;
    });
    let (medium, _) = enroll(rc, 0x12, 1, 1, |s| {
        s.cpus = 16;
        s.memory_mb = 65536;
        s.traits = vec!["CUSTOM_RAID1".into()];
    });
    let (large, _) = enroll(rc, 0x12, 2, 1, |s| {
        s.cpus = 64;
        s.memory_mb = 524288;
        s.traits = vec!["CUSTOM_RAID1".into(), "CUSTOM_GPU".into()];
    });
    let before = pool_state(rc);
    let nets = json!({"default": manual_network("10.0.16.30", None)});

    let fit = create_vm(
        json!({"resource_class": rc, "ironic_properties": {"cpus": 8}}),
        nets.clone(),
        json!([]),
        1,
    );
    assert_eq!(
        node_of(fit.ok().as_str().unwrap()),
        medium,
        "best fit, API v1 result is the cid"
    );
    let gpu = create_vm(
        json!({"resource_class": rc, "traits": ["CUSTOM_GPU"]}),
        nets.clone(),
        json!([]),
        2,
    );
    assert_eq!(node_of(&gpu.vm_cid()), large);

    let busy = create_vm(
        json!({"resource_class": rc, "traits": ["CUSTOM_GPU"]}),
        nets.clone(),
        json!([]),
        2,
    );
    busy.assert_retryable_creation_failure();
    let none = create_vm(
        json!({"resource_class": rc, "ironic_properties": {"cpus": 128}}),
        nets,
        json!([]),
        2,
    );
    assert_eq!(none.error_type(), Some("Bosh::Clouds::VMCreationFailed"));
    assert_eq!(
        none.response["error"]["ok_to_retry"],
        json!(false),
        "nothing matches at all"
    );
    let msg = none.response["error"]["message"].as_str().unwrap();
    assert!(msg.contains("too small"), "{msg}");

    call("delete_vm", json!([fit.ok()])).ok();
    call("delete_vm", json!([gpu.vm_cid()])).ok();
    assert_eq!(pool_state(rc), before);
}

#[test]
fn manageable_nodes_are_provided_and_returned_manageable() {
    let rc = "lc-mng";
    let (node, _) = enroll(rc, 0x13, 0, 1, |s| s.target = EnrollTarget::Manageable);
    let before = pool_state(rc);
    let out = create_vm(
        json!({"resource_class": rc}),
        json!({"default": manual_network("10.0.16.40", None)}),
        json!([]),
        2,
    );
    let vm = out.vm_cid();
    assert_eq!(node_of(&vm), node);
    let n = client().get_node(&node).unwrap();
    assert_eq!(n.provision_state.as_deref(), Some("active"));
    assert_eq!(record_of(&n).origin_state, "manageable");
    call("delete_vm", json!([vm])).ok();
    assert_eq!(
        client().get_node(&node).unwrap().provision_state.as_deref(),
        Some("manageable")
    );
    assert_eq!(pool_state(rc), before);
}

#[test]
fn ironic_params_enroll_a_node_that_delete_vm_removes() {
    let rc = "lc-enr";
    let mac = lab_mac(0x14, 0, 0);
    let cp = json!({"macs": [mac], "ironic_params": {"driver": "fake-hardware", "resource_class": rc,
        "properties": {"cpus": 4, "memory_mb": 8192, "local_gb": 50, "cpu_arch": "x86_64"}}});
    let out = create_vm(
        cp,
        json!({"default": manual_network("10.0.16.50", None)}),
        json!([]),
        2,
    );
    let vm = out.vm_cid();
    let node = node_of(&vm);
    let n = client().get_node(node).unwrap();
    assert_eq!(n.provision_state.as_deref(), Some("active"));
    assert_eq!(n.extra["bosh_enrolled_by_cpi"], json!(true));
    call("delete_vm", json!([vm])).ok();
    assert!(
        client().get_node(node).unwrap_err().is_not_found(),
        "the enrolled node is deleted"
    );
    let ports = client()
        .list_ports(&ironic_cpi::ironic::PortQuery {
            address: Some(mac),
            ..Default::default()
        })
        .unwrap();
    assert!(ports.is_empty(), "its ports went with it");
    assert!(pool_state(rc).is_empty());
}

#[test]
fn persistent_disks_live_on_their_node_registry_less() {
    let rc = "lc-disk";
    let (a, _) = enroll(rc, 0x15, 0, 1, |s| s.local_gb = 200);
    // Smaller: best fit would pick it, so landing on `a` below proves disk locality.
    let (b, _) = enroll(rc, 0x15, 1, 1, |s| {
        s.local_gb = 100;
        s.memory_mb = 8192;
    });
    let before = pool_state(rc);
    let nets = json!({"default": manual_network("10.0.16.60", None)});

    let vm = create_vm(
        json!({"resource_class": rc, "ironic_properties": {"local_gb": 150}}),
        nets.clone(),
        json!([]),
        2,
    )
    .vm_cid();
    assert_eq!(node_of(&vm), a);
    let disk = call("create_disk", json!([10240, {}, vm]))
        .ok()
        .as_str()
        .unwrap()
        .to_string();
    assert!(disk.starts_with("disk-525415000000-sdc-"), "{disk}");
    assert_eq!(call("has_disk", json!([disk])).ok(), &json!(true));
    assert_eq!(
        call("attach_disk", json!([vm, disk])).ok(),
        &json!({"path": "/dev/sdc"})
    );
    assert_eq!(call("get_disks", json!([vm])).ok(), &json!([disk]));
    call(
        "set_disk_metadata",
        json!([disk, {"deployment": "dep", "instance_group": "db"}]),
    )
    .ok();
    let too_big = call(
        "create_disk",
        json!([1_000_000, {"device": "/dev/sdd"}, vm]),
    );
    too_big.assert_error("Bosh::Clouds::NoDiskSpace");
    let no_vm = call("create_disk", json!([1024, {}, null]));
    assert_eq!(no_vm.error_type(), Some("Bosh::Clouds::CloudError"));

    // A disk of node a cannot go to a VM on node b.
    let other = create_vm(json!({"resource_class": rc}), nets.clone(), json!([]), 2).vm_cid();
    assert_eq!(node_of(&other), b);
    let cross = call("attach_disk", json!([other, disk]));
    cross.assert_error("Bosh::Clouds::CloudError");
    let cross = call("detach_disk", json!([other, disk]));
    cross.assert_error("Bosh::Clouds::DiskNotAttached");
    call("delete_vm", json!([other])).ok();

    call("detach_disk", json!([vm, disk])).ok();
    call("detach_disk", json!([vm, disk])).ok();
    assert_eq!(call("get_disks", json!([vm])).ok(), &json!([]));
    call("delete_vm", json!([vm])).ok();
    assert_eq!(
        call("has_disk", json!([disk])).ok(),
        &json!(true),
        "the disk outlives the VM"
    );

    // A VM with that disk lands on its node, whatever best fit says.
    let again = create_vm(json!({"resource_class": rc}), nets, json!([disk]), 2).vm_cid();
    assert_eq!(node_of(&again), a);
    call("delete_vm", json!([again])).ok();

    call("delete_disk", json!([disk])).ok();
    assert_eq!(call("has_disk", json!([disk])).ok(), &json!(false));
    let gone = call("delete_disk", json!([disk]));
    assert_eq!(gone.error_type(), Some("Bosh::Clouds::DiskNotFound"));
    assert_eq!(pool_state(rc), before);
}

#[test]
fn registry_mode_writes_settings_and_disks_to_the_registry() {
    let rc = "lc-reg";
    let (node, _) = enroll(rc, 0x16, 0, 1, |_| {});
    let s = shared();
    let agent = uuid::Uuid::new_v4().to_string();
    // API v1 from an old director: the registry holds the settings.
    let out = s.lab.call(
        "create_vm",
        json!([agent, s.stemcell, {"resource_class": rc}, {"default": manual_network("10.0.16.70", None)}, [], env()]),
        1,
        None,
    );
    let vm = out.ok().as_str().unwrap().to_string();
    assert_eq!(node_of(&vm), node);
    let user_data: Value =
        serde_json::from_slice(&drive_file(&node, "/ec2/latest/user-data")).unwrap();
    assert!(
        user_data["agent_id"].as_str().unwrap_or("").is_empty(),
        "registry mode: agent_id empty"
    );
    // Nameservers would make v2.477.0 `dig` the endpoint's host before any NIC is up.
    assert!(user_data.get("dns").is_none(), "{user_data}");
    assert_eq!(
        user_data["networks"]["default"]["dns"],
        json!(["10.0.16.2"])
    );
    assert!(
        !user_data.to_string().contains("writer-pw"),
        "the CPI's credentials are in no user data"
    );
    // The agent's way (bosh-agent v2.477.0 http_registry.go): GET <endpoint>/instances/<server
    // name>/settings, the URL's userinfo as basic auth. Out of the box, with the server's default
    // registry settings (no anonymous reads, no read user).
    let endpoint = url::Url::parse(user_data["registry"]["endpoint"].as_str().unwrap()).unwrap();
    assert_eq!(endpoint.username(), node, "the VM's own user");
    let mut bare = endpoint.clone();
    bare.set_username("").unwrap();
    bare.set_password(None).unwrap();
    assert_eq!(
        bare.as_str().trim_end_matches('/'),
        format!("{}/registry", s.lab.server.url)
    );
    let registry = |id: &str| {
        let mut url = endpoint.clone();
        url.set_username("").unwrap();
        url.set_password(None).unwrap();
        reqwest::blocking::Client::new()
            .get(format!(
                "{}/instances/{id}/settings",
                url.as_str().trim_end_matches('/')
            ))
            .basic_auth(endpoint.username(), endpoint.password())
            .send()
            .unwrap()
    };
    let body: Value = registry(&node).json().unwrap();
    assert_eq!(
        body["settings"].as_str().map(|_| ()),
        Some(()),
        "the agent reads its settings: {body}"
    );
    let settings: Value = serde_json::from_str(body["settings"].as_str().unwrap()).unwrap();
    assert_eq!(settings["agent_id"], json!(agent));
    assert_eq!(settings["env"], env());

    let disk = s
        .lab
        .call("create_disk", json!([1024, {}, vm]), 1, None)
        .ok()
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.lab.call("attach_disk", json!([vm, disk]), 1, None).ok(),
        &Value::Null
    );
    let body: Value = registry(&node).json().unwrap();
    let settings: Value = serde_json::from_str(body["settings"].as_str().unwrap()).unwrap();
    assert_eq!(
        settings["disks"]["persistent"][&disk],
        json!({"path": "/dev/sdc"})
    );
    s.lab.call("detach_disk", json!([vm, disk]), 1, None).ok();
    let body: Value = registry(&node).json().unwrap();
    let settings: Value = serde_json::from_str(body["settings"].as_str().unwrap()).unwrap();
    assert!(settings["disks"]["persistent"].get(&disk).is_none());
    s.lab.call("delete_disk", json!([disk]), 1, None).ok();
    s.lab.call("delete_vm", json!([vm]), 1, None).ok();
    assert_eq!(
        registry(&node).status(),
        401,
        "the VM's secret goes with the VM"
    );
    let r = reqwest::blocking::Client::new()
        .get(format!(
            "{}/registry/instances/{node}/settings",
            s.lab.server.url
        ))
        .basic_auth("writer", Some("writer-pw"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "registry settings go with the VM");
}

/// The network that carries the default gateway goes on the NIC the node boots from (Ironic's
/// `pxe_enabled` port), whatever the names of the networks and the order of the MACs.
#[test]
fn the_default_network_goes_on_the_pxe_nic() {
    let rc = "lc-pxe";
    // Manageable: Ironic changes a port's pxe_enabled only then (create_vm provides the node).
    let (node, macs) = enroll(rc, 0x1a, 0, 3, |s| s.target = EnrollTarget::Manageable);
    // Only the highest MAC boots by PXE: name order would give the default network the second.
    let s = shared();
    let ports = client()
        .list_ports(&ironic_cpi::ironic::PortQuery {
            node_uuid: Some(node.clone()),
            ..Default::default()
        })
        .unwrap();
    for port in ports.iter().filter(|p| p.address != macs[2]) {
        let r = reqwest::blocking::Client::new()
            .patch(format!("{}/v1/ports/{}", s.lab.ironic.url, port.uuid))
            .header("X-OpenStack-Ironic-API-Version", "1.19")
            .json(&json!([{"op": "replace", "path": "/pxe_enabled", "value": false}]))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    }
    let mut storage = manual_network("192.168.60.5", None);
    storage["default"] = json!([]);
    let public = manual_network("10.0.16.90", None);
    let out = create_vm(
        json!({"resource_class": rc}),
        json!({"a-storage": storage, "z-public": public}),
        json!([]),
        2,
    );
    let result = out.ok().clone();
    let vm = result[0].as_str().unwrap().to_string();
    assert_eq!(node_of(&vm), node);
    assert_eq!(result[1]["z-public"]["mac"], json!(macs[2]), "{result}");
    assert_eq!(result[1]["a-storage"]["mac"], json!(macs[0]), "{result}");
    let user_data: Value =
        serde_json::from_slice(&drive_file(&node, "/ec2/latest/user-data")).unwrap();
    assert_eq!(user_data["networks"]["z-public"]["mac"], json!(macs[2]));
    assert_eq!(user_data["networks"]["a-storage"]["mac"], json!(macs[0]));
    call("delete_vm", json!([vm])).ok();
}

#[test]
fn failures_after_the_claim_leave_the_pool_as_it_was() {
    let rc = "lc-fail";
    let (node, macs) = enroll(rc, 0x17, 0, 1, |s| s.target = EnrollTarget::Manageable);
    let before = pool_state(rc);
    let s = shared();

    // Unknown stemcell: refused before anything is claimed.
    let out = s.lab.call(
        "create_vm",
        json!(["a", "stemcell-nope-12345678", {"resource_class": rc}, {}, [], {}]),
        2,
        Some(3),
    );
    out.assert_error("Bosh::Clouds::CloudError");
    assert_eq!(pool_state(rc), before);

    // A network naming a MAC the node does not have: found before anything in Ironic changes
    // (the manageable node is not even provided: its provision state never moves).
    let moved = || client().get_node(&node).unwrap().provision_updated_at;
    let last_moved = moved();
    let mut net = manual_network("10.0.16.80", None);
    net["mac"] = json!("52:54:17:ff:ff:ff");
    let out = create_vm(
        json!({"resource_class": rc, "macs": [macs[0]]}),
        json!({"default": net}),
        json!([]),
        2,
    );
    out.assert_error("Bosh::Clouds::VMCreationFailed");
    assert_eq!(
        out.response["error"]["ok_to_retry"],
        json!(false),
        "bad input: a retry cannot help"
    );
    let msg = out.response["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("not a port of node") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(pool_state(rc), before);
    assert_eq!(moved(), last_moved, "the node was not provided");

    // A made-up disk cid (a real MAC, no such disk on its node) pins nothing and claims nothing.
    let fake_disk = format!("disk-{}-sdc-12345678", macs[0].replace(':', ""));
    let out = create_vm(
        json!({"resource_class": rc}),
        json!({"default": manual_network("10.0.16.82", None)}),
        json!([fake_disk]),
        2,
    );
    let msg = out.assert_error("Bosh::Clouds::CloudError");
    assert!(msg.contains("is not recorded on node"), "{msg}");
    // An agent_id of a megabyte is refused before anything is read or written.
    let out = s.lab.call(
        "create_vm",
        json!(["a".repeat(1 << 20), s.stemcell, {"resource_class": rc},
               {"default": manual_network("10.0.16.83", None)}, [], env()]),
        2,
        Some(3),
    );
    out.assert_error("Bosh::Clouds::CloudError");
    assert!(out.stdout.len() < 2000, "the error does not echo the input");
    assert_eq!(pool_state(rc), before);
    assert_eq!(moved(), last_moved);

    // A deploy that does not finish in time: the wait gives up, the node is undeployed and
    // restored, and the director may retry.
    let request = json!({"method": "create_vm", "api_version": 2,
        "arguments": [uuid::Uuid::new_v4().to_string(), s.stemcell, {"resource_class": rc},
                      {"default": manual_network("10.0.16.81", None)}, [], env()],
        "context": {"director_uuid": "d", "vm": {"stemcell": {"api_version": 3}},
                    "ironic": {"timeouts": {"deploy": 0.01}}}});
    let out = s.lab.call_raw(&request);
    let msg = out.assert_retryable_creation_failure();
    assert!(msg.contains(&node) && msg.contains("active"), "{msg}");
    assert_eq!(pool_state(rc), before);
}

#[test]
fn concurrent_create_vm_never_share_a_node() {
    let rc = "lc-conc";
    for i in 0..5 {
        enroll(rc, 0x18, i, 1, |_| {});
    }
    let before = pool_state(rc);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || {
                    create_vm(
                        json!({"resource_class": rc}),
                        json!({"default": manual_network(&format!("10.0.17.{}", 10 + i), None)}),
                        json!([]),
                        2,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let vms: Vec<String> = outcomes
        .iter()
        .filter(|o| o.response["error"].is_null())
        .map(CallOutcome::vm_cid)
        .collect();
    let mut nodes: Vec<String> = vms.iter().map(|v| node_of(v).to_string()).collect();
    let failures: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.response["error"].is_null())
        .collect();
    nodes.sort();
    nodes.dedup();
    let report: Vec<&str> = outcomes.iter().map(|o| o.stdout.as_str()).collect();
    assert_eq!(nodes.len(), 5, "five distinct nodes: {report:#?}");
    assert_eq!(failures.len(), 3);
    for f in failures {
        f.assert_retryable_creation_failure();
    }
    for v in &vms {
        call("delete_vm", json!([v])).ok();
    }
    assert_eq!(pool_state(rc), before);
}

#[test]
fn calculate_vm_cloud_properties_selects_big_enough_nodes() {
    let out = call(
        "calculate_vm_cloud_properties",
        json!([{"cpu": 2, "ram": 4096, "ephemeral_disk_size": 10241}]),
    );
    assert_eq!(
        out.ok(),
        &json!({"ironic_properties": {"cpus": 2, "memory_mb": 4096, "local_gb": 11}})
    );
}

#[test]
fn delete_vm_with_manual_cleaning_returns_the_node_to_its_origin() {
    let rc = "lc-clean";
    let (node, _) = enroll(rc, 0x19, 0, 1, |_| {});
    let before = pool_state(rc);
    let out = create_vm(
        json!({"resource_class": rc}),
        json!({"default": manual_network("10.0.16.90", None)}),
        json!([]),
        2,
    );
    let vm = out.vm_cid();
    assert_eq!(node_of(&vm), node);
    // cpi-config properties in the context override the file. First a clean step this node
    // lacks: cleaning fails, the error says why, and the node stays held for a retry.
    let delete = |step: Value| {
        shared().lab.call_raw(&json!({"method": "delete_vm", "arguments": [vm], "api_version": 2,
            "context": {"director_uuid": "d", "ironic": {"clean_on_delete": true, "clean_steps": [step]}}}))
    };
    let failed = delete(json!({"interface": "raid", "step": "delete_configuration"}));
    let msg = failed.assert_error("Bosh::Clouds::CloudError");
    assert!(
        msg.contains("clean failed") && msg.contains("does not support this clean step"),
        "{msg}"
    );
    assert_eq!(
        client().get_node(&node).unwrap().provision_state.as_deref(),
        Some("clean failed")
    );
    // The retry with a step fake-hardware has recovers the node and finishes the job.
    let out = delete(json!({"interface": "bios", "step": "factory_reset"}));
    out.ok();
    let log = out.response["log"].as_str().unwrap();
    assert!(log.contains("cleaned node"), "{log}");
    assert_eq!(
        pool_state(rc),
        before,
        "cleaned, then back to available and released"
    );
}

#[test]
fn pool_shows_ironic_text_with_control_characters_escaped() {
    let rc = "lc-pool";
    let (node, _) = enroll(rc, 0x1b, 0, 1, |_| {});
    // Anyone who may edit a node in Ironic writes its extra: BOSH metadata that would clear the
    // screen and forge a line of the table.
    let forged = "dep\u{1b}[2J\u{1b}[H\nforged-node  active  power on";
    client()
        .patch_node(
            &node,
            &[ironic_cpi::ironic::PatchOp::add(
                "/extra/bosh_metadata",
                json!({"deployment": forged}),
            )],
        )
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironic_cpi"))
        .arg("-c")
        .arg(&shared().lab.config_path)
        .arg("pool")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(!table.contains('\u{1b}'), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains(&node))
        .unwrap_or_else(|| panic!("{node} missing:\n{table}"));
    assert!(
        line.contains("dep\\u{1b}[2J\\u{1b}[H\\nforged-node"),
        "{line}"
    );
    assert!(
        !table.lines().any(|l| l.starts_with("forged-node")),
        "{table}"
    );
    client()
        .patch_node(
            &node,
            &[ironic_cpi::ironic::PatchOp::remove("/extra/bosh_metadata")],
        )
        .unwrap();
}
