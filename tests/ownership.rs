//! Who owns a node, against the real Ironic: each failure the director's routine retries meet in
//! a real fleet (a process killed, a timeout, an answer lost or late, a race with another call),
//! then what the director or the operator does next, and every node ends where it should be.
//! `tests/ownership_model.rs` explores the same rules exhaustively over the model of Ironic; this
//! file proves they hold with the real one, through `ironic_cpi_testkit::faultproxy` where Ironic cannot
//! misbehave on demand.
//!
//! Two labs: a fast one (deploys and undeploys finish at once) for the proxy tests, and a slow
//! one (the fake deploy driver sleeps) where a process can be killed midway.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ironic_cpi::ironic::{IronicClient, Node};
use ironic_cpi_testkit::cpi::{create_vm_args, node_of, CallOutcome, CpiLab};
use ironic_cpi_testkit::faultproxy::{Fault, FaultProxy};
use ironic_cpi_testkit::ironic::{enroll_pool, pool_state, IronicLabOptions};

struct Lab {
    lab: CpiLab,
    stemcell: String,
}

/// Deploys and undeploys finish at once.
fn fast() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| Lab::start(IronicLabOptions::default()))
}

/// The fake deploy driver sleeps 4 s in deploy, tear-down and clean-up: a deploy takes 4 s and
/// an undeploy 8 s or more, long enough to kill a process in the middle.
fn slow() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        Lab::start(IronicLabOptions {
            deploy_delay: 4.0,
            ..Default::default()
        })
    })
}

impl Lab {
    fn start(opts: IronicLabOptions) -> Lab {
        let lab = common::start_lab(opts, false, false);
        let stemcell = lab.upload_stemcell(None, 64 * 1024);
        Lab { lab, stemcell }
    }
}

/// A test's own pool in `l`: `count` nodes of class `rc` (MACs from `byte`), a client, and the
/// pool as it was, which every test leaves it in.
fn own_pool(l: &Lab, rc: &str, byte: u8, count: u16) -> (Vec<String>, IronicClient, Vec<Value>) {
    let client = l.lab.client().unwrap();
    let nodes = enroll_pool(&client, rc, byte, count);
    let before = pool_state(&client, rc);
    (nodes, client, before)
}

fn create_vm(l: &Lab, config: &Path, rc: &str) -> CallOutcome {
    l.lab.call_with_config(
        config,
        "create_vm",
        create_vm_args(&l.stemcell, rc),
        2,
        Some(3),
    )
}

fn call(l: &Lab, config: &Path, method: &str, args: Value) -> CallOutcome {
    l.lab.call_with_config(config, method, args, 2, Some(3))
}

/// The lab's CPI config with `edit` applied.
fn config(lab: &CpiLab, dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    lab.config_variant(dir, "cpi.json", edit)
}

/// The lab's config with Ironic reached through `proxy`.
fn through(lab: &CpiLab, dir: &Path, proxy: &FaultProxy) -> PathBuf {
    config(lab, dir, |c| {
        c["ironic"]["url"] = json!(proxy.url);
        c["ironic"]["request_timeout"] = json!(3.0);
        c["ironic"]["retry"] = json!({"max_attempts": 4, "initial_delay": 0.1, "max_delay": 0.5});
    })
}

/// Poll the node (directly, not through any proxy) until `done` holds.
fn wait_for(client: &IronicClient, node: &str, what: &str, done: impl Fn(&Node) -> bool) -> Node {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = client.get_node(node).unwrap();
        if done(&n) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} never got to: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record_of(n: &Node) -> Option<&serde_json::Map<String, Value>> {
    n.extra.get("bosh_vm").and_then(Value::as_object)
}

/// `ironic_cpi <tool args>` with `config`: exit status and stdout + stderr.
fn tool(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ironic_cpi"))
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// delete_vm killed after Ironic accepted the undeploy: the node finishes undeploying by itself
/// and its claim goes, but its record stays, so no create_vm takes it; the director's retry of
/// the delete_vm finishes the teardown.
#[test]
fn delete_vm_killed_mid_undeploy_then_retried() {
    let l = fast();
    let rc = "own-kill-delete";
    let (nodes, client, before) = own_pool(l, rc, 0x71, 1);
    let node = &nodes[0];
    let vm = create_vm(l, &l.lab.config_path, rc).vm_cid();

    let proxy = FaultProxy::start(&l.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxied = through(&l.lab, dir.path(), &proxy);
    // The undeploy is applied; its answer never comes back before the kill.
    proxy.inject(
        Some("PUT"),
        &format!("{node}/states/provision"),
        Fault::DelayAnswer { secs: 60 },
        1,
    );
    let running = l
        .lab
        .spawn_call(&proxied, "delete_vm", json!([vm]), 2, Some(3));
    let n = wait_for(&client, node, "undeployed by Ironic", |n| {
        n.state() == "available" && n.instance_uuid.is_none()
    });
    running.kill();
    assert!(
        record_of(&n).is_some_and(|r| r.contains_key(vm.split_once(':').unwrap().1)),
        "the record must outlive the undeploy: {:?}",
        n.extra
    );

    // The node looks free to Ironic (no instance_uuid, available), not to the CPI.
    let out = create_vm(l, &l.lab.config_path, rc);
    let msg = out.assert_retryable_creation_failure();
    eprintln!("create_vm while the teardown is unfinished: {msg}");
    assert_eq!(
        call(l, &l.lab.config_path, "has_vm", json!([vm])).ok(),
        &json!(true),
        "the VM is not gone until its teardown has finished"
    );

    let retry = call(l, &l.lab.config_path, "delete_vm", json!([vm]));
    retry.ok();
    eprintln!("retried delete_vm: {}", retry.response["log"]);
    assert_eq!(pool_state(&client, rc), before);
    assert_eq!(
        call(l, &l.lab.config_path, "has_vm", json!([vm])).ok(),
        &json!(false)
    );

    // A later retry of the same delete_vm, once the node serves a new VM, leaves that VM alone.
    let newer = create_vm(l, &l.lab.config_path, rc).vm_cid();
    assert_eq!(node_of(&newer), node);
    call(l, &l.lab.config_path, "delete_vm", json!([vm])).ok();
    let n = client.get_node(node).unwrap();
    assert_eq!(
        n.state(),
        "active",
        "the stale delete_vm touched the new VM"
    );
    assert_eq!(
        call(l, &l.lab.config_path, "has_vm", json!([newer])).ok(),
        &json!(true)
    );
    call(l, &l.lab.config_path, "delete_vm", json!([newer])).ok();
    assert_eq!(pool_state(&client, rc), before);
}

/// The undeploy outlasts `timeouts.undeploy`: delete_vm answers an error that says what it
/// waited for, the node keeps its record, and the retry finishes once Ironic is done.
#[test]
fn undeploy_timeout_then_retry() {
    let l = slow();
    let rc = "own-undeploy-timeout";
    let (nodes, client, before) = own_pool(l, rc, 0x72, 1);
    let node = &nodes[0];
    let vm = create_vm(l, &l.lab.config_path, rc).vm_cid();

    let dir = tempfile::tempdir().unwrap();
    let impatient = config(&l.lab, dir.path(), |c| {
        c["ironic"]["timeouts"]["undeploy"] = json!(1.0);
    });
    let out = call(l, &impatient, "delete_vm", json!([vm]));
    let msg = out.assert_error("Bosh::Clouds::CloudError");
    eprintln!("delete_vm with a 1 s undeploy timeout: {msg}");
    assert!(msg.contains(node.as_str()), "{msg}");
    assert!(msg.contains("available"), "says what it waited for: {msg}");

    // Whatever Ironic does meanwhile, the node is not free while the record is there.
    let n = client.get_node(node).unwrap();
    assert!(record_of(&n).is_some(), "{:?}", n.extra);
    let other = create_vm(l, &l.lab.config_path, rc);
    other.assert_retryable_creation_failure();

    call(l, &l.lab.config_path, "delete_vm", json!([vm])).ok();
    assert_eq!(pool_state(&client, rc), before);
}

/// A create_vm running while another node's undeploy finishes and its delete_vm has not yet
/// released it: the create_vm takes the free node, never the one being torn down.
#[test]
fn create_vm_while_another_nodes_undeploy_finishes() {
    let l = fast();
    let rc = "own-race";
    let (nodes, client, before) = own_pool(l, rc, 0x73, 2);
    let first = create_vm(l, &l.lab.config_path, rc).vm_cid();
    let busy = node_of(&first).to_string();
    let spare = nodes.iter().find(|n| **n != busy).unwrap().clone();

    let proxy = FaultProxy::start(&l.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxied = config(&l.lab, dir.path(), |c| {
        c["ironic"]["url"] = json!(proxy.url);
        c["ironic"]["request_timeout"] = json!(30.0);
    });
    // The undeploy is applied at once; delete_vm hears of it 8 s later.
    proxy.inject(
        Some("PUT"),
        &format!("{busy}/states/provision"),
        Fault::DelayAnswer { secs: 8 },
        1,
    );
    let deleting = l
        .lab
        .spawn_call(&proxied, "delete_vm", json!([first]), 2, Some(3));
    wait_for(&client, &busy, "undeployed, claim cleared", |n| {
        n.state() == "available" && n.instance_uuid.is_none()
    });
    let second = create_vm(l, &l.lab.config_path, rc);
    let second = second.vm_cid();
    assert_eq!(
        node_of(&second),
        spare,
        "create_vm took the node a delete_vm still owns"
    );
    let out = deleting.wait();
    out.ok();
    eprintln!("delete_vm that raced a create_vm: {}", out.response["log"]);
    let n = client.get_node(&busy).unwrap();
    assert_eq!(
        Some(&json!({"state": n.state(), "name": n.name, "extra": n.extra})),
        before
            .iter()
            .find(|b| b["uuid"] == json!(busy))
            .map(|b| json!({"state": b["state"], "name": b["name"], "extra": b["extra"]}))
            .as_ref(),
        "the undeployed node is back exactly as it was"
    );
    call(l, &l.lab.config_path, "delete_vm", json!([second])).ok();
    assert_eq!(pool_state(&client, rc), before);
}

/// The claim is applied and its answer lost (connection dropped), or late past
/// `request_timeout`: create_vm reads the node, sees its own claim, and goes on.
#[test]
fn claim_answer_dropped_or_late() {
    let l = fast();
    let rc = "own-claim-answer";
    let (nodes, client, before) = own_pool(l, rc, 0x74, 1);
    let node = &nodes[0];
    for fault in [Fault::DropAnswer, Fault::DelayAnswer { secs: 6 }] {
        let proxy = FaultProxy::start(&l.lab.ironic.url).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let proxied = through(&l.lab, dir.path(), &proxy);
        // The first PATCH of create_vm is its claim.
        proxy.inject(Some("PATCH"), &format!("/v1/nodes/{node}"), fault, 1);
        let out = create_vm(l, &proxied, rc);
        assert_eq!(proxy.injected(), 1, "{fault:?} was met");
        eprintln!(
            "create_vm with the claim's answer {fault:?}: {}",
            out.response["log"]
        );
        let vm = out.vm_cid();
        let n = client.get_node(node).unwrap();
        assert_eq!(n.state(), "active");
        assert_eq!(n.instance_uuid.as_deref(), vm.split_once(':').map(|p| p.1));
        call(l, &l.lab.config_path, "delete_vm", json!([vm])).ok();
        assert_eq!(pool_state(&client, rc), before, "{fault:?}");
    }
}

/// create_vm killed right after its claim: the node is held by a bare claim that no create_vm
/// steals; `ironic_cpi pool` shows it stale, and `ironic_cpi free` returns the node.
#[test]
fn create_vm_killed_after_its_claim_then_freed() {
    let l = fast();
    let rc = "own-kill-claim";
    let (nodes, client, before) = own_pool(l, rc, 0x75, 1);
    let node = &nodes[0];

    let proxy = FaultProxy::start(&l.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxied = through(&l.lab, dir.path(), &proxy);
    proxy.inject(
        Some("PATCH"),
        &format!("/v1/nodes/{node}"),
        Fault::DelayAnswer { secs: 60 },
        1,
    );
    let running = l.lab.spawn_call(
        &proxied,
        "create_vm",
        create_vm_args(&l.stemcell, rc),
        2,
        Some(3),
    );
    wait_for(&client, node, "claimed", |n| n.instance_uuid.is_some());
    running.kill();

    let out = create_vm(l, &l.lab.config_path, rc);
    out.assert_retryable_creation_failure();

    let (ok, shown) = tool(&l.lab.config_path, &["pool", "--stale-after", "0s"]);
    assert!(ok, "{shown}");
    eprintln!("{shown}");
    let line = shown
        .lines()
        .find(|l| l.contains(&format!("{rc}-0")))
        .unwrap_or_else(|| panic!("no line for the node:\n{shown}"));
    assert!(line.contains("STALE"), "{line}");

    // Not stale yet by the default 15 minutes: refused.
    let (ok, refused) = tool(&l.lab.config_path, &["free", node]);
    assert!(!ok, "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    let (ok, freed) = tool(&l.lab.config_path, &["free", node, "--stale-after", "0s"]);
    assert!(ok, "{freed}");
    eprintln!("free: {freed}");
    assert_eq!(pool_state(&client, rc), before);
}

/// create_vm killed while Ironic deploys: the node ends active under a record whose process has
/// exited. `ironic_cpi pool` says so; `ironic_cpi free` refuses (an agent may run there) until
/// forced, then undeploys the node and returns it.
#[test]
fn create_vm_killed_during_the_deploy_wait_then_freed() {
    let l = slow();
    let rc = "own-kill-deploy";
    let (nodes, client, before) = own_pool(l, rc, 0x76, 1);
    let node = &nodes[0];

    let running = l.lab.spawn_call(
        &l.lab.config_path,
        "create_vm",
        create_vm_args(&l.stemcell, rc),
        2,
        Some(3),
    );
    wait_for(&client, node, "deploying", |n| {
        n.state() == "deploying" || n.state() == "wait call-back"
    });
    running.kill();
    let n = wait_for(&client, node, "active", |n| n.state() == "active");
    assert!(record_of(&n).is_some(), "{:?}", n.extra);

    let out = create_vm(l, &l.lab.config_path, rc);
    out.assert_retryable_creation_failure();

    let (ok, shown) = tool(&l.lab.config_path, &["pool"]);
    assert!(ok, "{shown}");
    eprintln!("{shown}");
    let line = shown
        .lines()
        .find(|l| l.contains(&format!("{rc}-0")))
        .unwrap_or_else(|| panic!("no line for the node:\n{shown}"));
    assert!(
        line.contains("STALE"),
        "a record whose process has exited is stale at once: {line}"
    );
    // An agent may run on an active node nobody knows: freeing it is the operator's explicit
    // decision.
    let (ok, refused) = tool(&l.lab.config_path, &["free", node]);
    assert!(!ok && refused.contains("may be running"), "{refused}");
    let (ok, freed) = tool(&l.lab.config_path, &["free", node, "--force"]);
    assert!(ok, "{freed}");
    eprintln!("free --force: {freed}");
    assert_eq!(pool_state(&client, rc), before);
}
