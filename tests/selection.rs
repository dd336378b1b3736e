//! Node selection against the real Ironic: create_vm asks Ironic for the free nodes only (per
//! free provision state, with the selection's resource_class), for the owners of a MAC, or for
//! the node holding the VM's disks; whatever Ironic's filters let through is checked again, so
//! a node carrying a VM record is never taken; and what a create_vm costs does not grow with the
//! deployed part of the pool.
//!
//! One lab for the file; each test has its own resource classes and MAC byte, and returns the
//! nodes it used to the pool.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use ironic_cpi::ironic::{IronicClient, PatchOp};
use ironic_cpi::pool::record::VmRecord;
use ironic_cpi::pool::whoami::Process;
use ironic_cpi_testkit::cpi::{node_of, CallOutcome, CpiLab};
use ironic_cpi_testkit::ironic::{enroll_node, lab_mac, pool_state, IronicLabOptions, NodeSpec};

const WAIT: Duration = Duration::from_secs(120);

struct Shared {
    lab: CpiLab,
    stemcell: String,
}

fn shared() -> &'static Shared {
    static LAB: OnceLock<Shared> = OnceLock::new();
    LAB.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let lab = common::start_lab(IronicLabOptions::default(), false, false);
        let stemcell = lab.upload_stemcell(None, 64 * 1024);
        Shared { lab, stemcell }
    })
}

fn client() -> IronicClient {
    shared().lab.client().unwrap()
}

/// Free nodes of class `rc`, two NICs each; their uuids.
fn free_nodes(rc: &str, byte: u8, count: u16, f: impl Fn(u16, &mut NodeSpec)) -> Vec<String> {
    let c = client();
    (0..count)
        .map(|i| {
            let mut spec = NodeSpec::new(format!("{rc}-{i}"));
            spec.resource_class = Some(rc.into());
            spec.macs = vec![lab_mac(byte, i, 0), lab_mac(byte, i, 1)];
            f(i, &mut spec);
            enroll_node(&c, &spec).unwrap().uuid
        })
        .collect()
}

/// `count` nodes of class `rc` deployed by another consumer (adopted: `active` with an
/// `instance_uuid`, as Nova or metalsmith leave them), enrolled by four threads.
fn deployed_nodes(rc: &str, byte: u8, from: u16, count: u16) {
    let next = AtomicU16::new(from);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let c = client();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= from + count {
                        break;
                    }
                    deploy_one(&c, rc, byte, i);
                }
            });
        }
    });
}

fn deploy_one(c: &IronicClient, rc: &str, byte: u8, i: u16) {
    let node = c
        .create_node(
            &json!({"name": format!("{rc}-{i}"), "driver": "fake-hardware",
            "resource_class": rc,
            "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"}}),
        )
        .unwrap();
    for nic in 0..2 {
        c.create_port(&node.uuid, &lab_mac(byte, i, nic), None)
            .unwrap();
    }
    c.set_provision_state(&node.uuid, "manage", None).unwrap();
    c.wait_for_provision_state(&node.uuid, &["manageable"], WAIT)
        .unwrap();
    c.set_provision_state(&node.uuid, "adopt", None).unwrap();
    c.wait_for_provision_state(&node.uuid, &["active"], WAIT)
        .unwrap();
    c.patch_node(
        &node.uuid,
        &[PatchOp::add(
            "/instance_uuid",
            json!(uuid::Uuid::new_v4().to_string()),
        )],
    )
    .unwrap();
}

fn create_vm(cloud_properties: Value, disk_cids: Value) -> CallOutcome {
    let s = shared();
    let net = json!({"type": "dynamic", "default": ["dns", "gateway"], "cloud_properties": {}});
    s.lab.call(
        "create_vm",
        json!([uuid::Uuid::new_v4().to_string(), s.stemcell, cloud_properties,
               {"default": net}, disk_cids, {}]),
        2,
        Some(3),
    )
}

fn call(method: &str, args: Value) -> CallOutcome {
    shared().lab.call(method, args, 2, Some(3))
}

fn log_of(out: &CallOutcome) -> &str {
    out.response["log"].as_str().unwrap_or_default()
}

/// The figure before `suffix` in the call's log ("... (12 HTTP requests to Ironic in all)").
fn figure(out: &CallOutcome, suffix: &str) -> u64 {
    let log = log_of(out);
    let before = log
        .split(suffix)
        .next()
        .filter(|b| b.len() < log.len())
        .unwrap_or_else(|| panic!("'{suffix}' not in the log:\n{log}"));
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure before '{suffix}' in:\n{log}"))
}

/// Requests in all, and those spent before the first claim (finding the candidates).
fn costs(out: &CallOutcome) -> (u64, u64) {
    (
        figure(out, " HTTP requests to Ironic in all"),
        figure(out, " HTTP requests so far"),
    )
}

#[test]
fn the_cost_of_create_vm_follows_the_free_nodes_not_the_pool() {
    let (busy, free) = ("sel-busy", "sel-free");
    deployed_nodes(busy, 0x31, 0, 20);
    let ours = free_nodes(free, 0x32, 3, |_, _| {});
    let before = pool_state(&client(), free);

    let small = create_vm(json!({"resource_class": free}), json!([]));
    let vm = small.vm_cid();
    assert!(ours.contains(&node_of(&vm).to_string()), "{vm}");
    call("delete_vm", json!([vm])).ok();
    assert_eq!(pool_state(&client(), free), before);

    deployed_nodes(busy, 0x31, 20, 200);
    let large = create_vm(json!({"resource_class": free}), json!([]));
    let vm = large.vm_cid();
    assert!(ours.contains(&node_of(&vm).to_string()), "{vm}");
    call("delete_vm", json!([vm])).ok();
    assert_eq!(pool_state(&client(), free), before);

    let ((small_all, small_find), (large_all, large_find)) = (costs(&small), costs(&large));
    println!(
        "create_vm by resource_class, 3 free nodes: {small_all} HTTP requests beside 20 \
         deployed nodes ({small_find} to find the candidates), {large_all} beside 220 \
         ({large_find}); {:.2} s and {:.2} s",
        small.elapsed.as_secs_f64(),
        large.elapsed.as_secs_f64()
    );
    // Finding the candidates is the part that could grow with the pool: it must not at all.
    // The rest is the claim, the deploy and polls whose number depends on how long the deploy
    // takes on this machine, so the totals are printed above, not bounded (a bound failed
    // under load: 14 polls-inclusive requests on a busy 2-core machine).
    assert_eq!(large_find, small_find, "{}", log_of(&large));
}

#[test]
fn a_node_ironic_calls_free_but_carrying_a_vm_record_is_not_taken() {
    let rc = "sel-record";
    let nodes = free_nodes(rc, 0x33, 2, |i, s| {
        // The held node is the better fit: only the record keeps create_vm away from it.
        s.memory_mb = if i == 0 { 8192 } else { 16384 };
    });
    let (held, free) = (&nodes[0], &nodes[1]);
    // What a teardown in progress leaves: undeploy has cleared instance_uuid (Ironic's
    // `associated=false` lists the node), the VM record still owns it.
    let record = VmRecord::new(
        "0193aaaa-0000-7000-8000-000000000001",
        "agent-of-another-vm",
        &client().get_node(held).unwrap(),
        Process {
            host: "another-host".into(),
            pid: 1,
            start_ticks: None,
            request_id: None,
        },
        None,
    );
    client()
        .patch_node(held, &[PatchOp::add("/extra/bosh_vm", record.container())])
        .unwrap();
    let listed = client()
        .list_nodes(&ironic_cpi::ironic::NodeQuery {
            resource_class: Some(rc.into()),
            associated: Some(false),
            provision_state: Some("available".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.len(), 2, "Ironic's filter calls both nodes free");
    let held_before = client().get_node(held).unwrap();

    let out = create_vm(json!({"resource_class": rc}), json!([]));
    let vm = out.vm_cid();
    assert_eq!(&node_of(&vm), free);

    // Nothing else is free: the answer says why, and lets the director retry, since the
    // matching node is only held.
    let none = create_vm(json!({"resource_class": rc}), json!([]));
    let message = none.assert_retryable_creation_failure();
    assert!(
        message.contains("0 of ") && message.contains("2 are held by a VM or a claim"),
        "{message}"
    );
    let held_after = client().get_node(held).unwrap();
    assert_eq!(
        (
            &held_after.extra,
            &held_after.instance_uuid,
            &held_after.provision_state
        ),
        (
            &held_before.extra,
            &held_before.instance_uuid,
            &held_before.provision_state
        ),
        "the held node was touched"
    );
    call("delete_vm", json!([vm])).ok();
    client()
        .patch_node(held, &[PatchOp::remove("/extra/bosh_vm")])
        .unwrap();
}

#[test]
fn selection_by_mac_and_by_disk_locality_among_many_free_nodes() {
    let rc = "sel-pin";
    let nodes = free_nodes(rc, 0x34, 6, |_, _| {});
    let before = pool_state(&client(), rc);
    let target = &nodes[4];
    let mac = lab_mac(0x34, 4, 1).to_uppercase();

    let by_mac = create_vm(json!({"macs": [mac]}), json!([]));
    let vm = by_mac.vm_cid();
    assert_eq!(&node_of(&vm), target);
    let disk = call("create_disk", json!([1024, {}, vm]))
        .ok()
        .as_str()
        .unwrap()
        .to_string();
    call("delete_vm", json!([vm])).ok();

    // Six equal free nodes: only the disk puts the VM on node 4, every time.
    for _ in 0..2 {
        let out = create_vm(json!({"resource_class": rc}), json!([disk]));
        let vm = out.vm_cid();
        assert_eq!(&node_of(&vm), target, "{}", log_of(&out));
        call("delete_vm", json!([vm])).ok();
    }
    // The disk's node and another node's MAC cannot both hold.
    let other_mac = lab_mac(0x34, 2, 0);
    let out = create_vm(json!({"macs": [other_mac]}), json!([disk]));
    let message = out.assert_error("Bosh::Clouds::VMCreationFailed");
    assert!(
        message.contains(target.as_str()) && message.contains("own none of cloud_properties.macs"),
        "{message}"
    );

    call("delete_disk", json!([disk])).ok();
    assert_eq!(pool_state(&client(), rc), before);
}
