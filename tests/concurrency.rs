//! Many create_vm processes at once against one pool, as the director's threads run them, while
//! the previous round's VMs are being deleted: no node is handed out twice, no claim is left
//! behind, the calls beyond what is free fail with a retryable `VMCreationFailed` as soon as every
//! matching node is held, and once everything is deleted the pool is exactly as it was.
//!
//! Every CPI call is its own `ironic_cpi` process (the real binary), against the real Ironic.
//! CI runs `IRONIC_CPI_CONCURRENCY_ROUNDS` rounds (default 3) of 48 create_vm on 40 nodes; each
//! round's creates start together with the deletes of the round before. The losers' times are
//! printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use ironic_cpi_testkit::cpi::{node_of, CallOutcome, CpiLab};
use ironic_cpi_testkit::ironic::{enroll_node, lab_mac, IronicLabOptions, NodeSpec};

const POOL: usize = 40;
const CALLS: usize = 48;
const RC: &str = "rc-concurrency";

struct Shared {
    lab: CpiLab,
    stemcell: String,
    /// The lab's config with the CPI's default waits for Ironic's transitions instead of the
    /// lab's 60 s: what this test checks is who gets which node, and 88 calls at once on a
    /// loaded 2-core machine can take longer than that.
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Shared {
    fn call(&self, method: &str, args: Value) -> CallOutcome {
        self.lab
            .call_with_config(&self.config, method, args, 2, Some(3))
    }
}

fn shared() -> &'static Shared {
    static LAB: OnceLock<Shared> = OnceLock::new();
    LAB.get_or_init(|| {
        let lab = common::start_lab(IronicLabOptions::default(), false, false);
        let stemcell = lab.upload_stemcell(None, 64 * 1024);
        enroll_pool(&lab);
        let dir = tempfile::tempdir().unwrap();
        let config = lab.config_variant(dir.path(), "cpi.json", |c| {
            c["ironic"].as_object_mut().unwrap().remove("timeouts");
        });
        Shared {
            lab,
            stemcell,
            config,
            _dir: dir,
        }
    })
}

/// 40 nodes, enrolled by 4 threads at once (each node walks enroll -> manageable -> available).
fn enroll_pool(lab: &CpiLab) {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let client = lab.client().unwrap();
                for i in (t..POOL).step_by(4) {
                    let mut spec = NodeSpec::new(format!("conc-{i:02}"));
                    spec.resource_class = Some(RC.into());
                    spec.macs = vec![lab_mac(0x41, i as u16, 0), lab_mac(0x41, i as u16, 1)];
                    enroll_node(&client, &spec).unwrap();
                }
            });
        }
    });
}

fn pool_state() -> Vec<Value> {
    ironic_cpi_testkit::ironic::pool_state(&shared().lab.client().unwrap(), RC)
}

fn create_vm(agent_id: &str) -> CallOutcome {
    let s = shared();
    let net = json!({"default": {"type": "manual", "ip": "10.0.40.10", "netmask": "255.255.255.0",
        "gateway": "10.0.40.1", "dns": ["10.0.40.2"], "default": ["dns", "gateway"],
        "prefix": "24", "cloud_properties": {}}});
    s.call(
        "create_vm",
        json!([agent_id, s.stemcell, {"resource_class": RC}, net, [], {"bosh": {"password": "x"}}]),
    )
}

/// What one round's create_vm calls gave.
struct Round {
    /// (agent id, vm cid) of each winner.
    vms: Vec<(String, String)>,
    /// How long each failed attempt took to answer its retryable failure.
    loser_secs: Vec<f64>,
    winner_secs: Vec<f64>,
}

/// `CALLS` create_vm processes started together, while `deleting` (the previous round's VMs) are
/// deleted by as many concurrent delete_vm processes. A create_vm that finds every node held
/// tries again (as the director's next attempt would) while deletes are still running, so
/// claims race the releases; once the deletes are done, each caller makes one last attempt.
fn round(deleting: &[String]) -> Round {
    let agents: Vec<String> = (0..CALLS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let deletes_running = AtomicBool::new(!deleting.is_empty());
    let results: Vec<(String, Vec<CallOutcome>)> = std::thread::scope(|s| {
        let creates: Vec<_> = agents
            .iter()
            .map(|a| {
                let running = &deletes_running;
                s.spawn(move || {
                    let mut attempts = Vec::new();
                    loop {
                        let last_chance = !running.load(Ordering::SeqCst);
                        let out = create_vm(a);
                        let won = out.response["error"].is_null();
                        attempts.push(out);
                        if won || last_chance {
                            return (a.clone(), attempts);
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })
            })
            .collect();
        let deletes: Vec<_> = deleting
            .iter()
            .map(|vm| s.spawn(move || shared().call("delete_vm", json!([vm]))))
            .collect();
        for d in deletes {
            d.join().unwrap().ok();
        }
        deletes_running.store(false, Ordering::SeqCst);
        creates.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut r = Round {
        vms: Vec::new(),
        loser_secs: Vec::new(),
        winner_secs: Vec::new(),
    };
    for (agent, attempts) in &results {
        for out in attempts {
            if out.response["error"].is_null() {
                r.vms
                    .push((agent.clone(), out.result()[0].as_str().unwrap().to_string()));
                r.winner_secs.push(out.elapsed.as_secs_f64());
            } else {
                out.assert_retryable_creation_failure();
                r.loser_secs.push(out.elapsed.as_secs_f64());
            }
        }
    }
    r
}

/// No node holds two VMs, every winner's node is active with its agent and its record, and every
/// other pool node is free (no leaked claim).
fn check_round(r: &Round, before: &[Value]) {
    let nodes: BTreeSet<&str> = r.vms.iter().map(|(_, vm)| node_of(vm)).collect();
    assert_eq!(nodes.len(), r.vms.len(), "a node was handed out twice");
    // Every caller tries once more after the deletes are done, so nodes are won; how many is
    // printed (a caller that loses every race it runs gives up, which is not a fault).
    assert!(!r.vms.is_empty(), "no create_vm won a node");
    assert!(r.vms.len() <= POOL);
    let client = shared().lab.client().unwrap();
    for (agent, vm) in &r.vms {
        let (node_id, vm_id) = vm.split_once(':').expect("vm cid is <node>:<vm id>");
        let node = client.get_node(node_id).unwrap();
        assert_eq!(node.provision_state.as_deref(), Some("active"));
        assert_eq!(node.instance_uuid.as_deref(), Some(vm_id), "node {node_id}");
        assert_eq!(node.extra["bosh_vm"][vm_id]["agent_id"], json!(agent));
        assert_eq!(node.instance_info["bosh_agent_id"], json!(agent));
        assert!(before.iter().any(|b| b["uuid"] == json!(node_id)));
    }
    // The pool's other nodes: exactly as before (the previous round's deletes have finished).
    let now = pool_state();
    for (was, is) in before.iter().zip(&now) {
        let uuid = was["uuid"].as_str().unwrap();
        if !nodes.contains(uuid) {
            assert_eq!(
                is, was,
                "node {uuid} is neither a winner's nor back as it was"
            );
        }
    }
}

fn summary(label: &str, secs: &[f64]) -> String {
    if secs.is_empty() {
        return format!("{label}: none");
    }
    let mut v = secs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{label}: {} (min {:.1} s, median {:.1} s, max {:.1} s)",
        v.len(),
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

#[test]
fn concurrent_create_vm_never_shares_a_node_and_the_pool_comes_back() {
    let _ = shared();
    let before = pool_state();
    assert_eq!(before.len(), POOL);
    let rounds: usize = std::env::var("IRONIC_CPI_CONCURRENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut previous: Vec<String> = Vec::new();
    for n in 1..=rounds {
        let started = std::time::Instant::now();
        let r = round(&previous);
        check_round(&r, &before);
        eprintln!(
            "round {n}/{rounds}: {} of {CALLS} create_vm won one of {POOL} nodes while {} delete_vm ran, {:.1} s; {}; {}",
            r.vms.len(),
            previous.len(),
            started.elapsed().as_secs_f64(),
            summary("winners", &r.winner_secs),
            summary("failed attempts", &r.loser_secs),
        );
        previous = r.vms.into_iter().map(|(_, vm)| vm).collect();
    }
    let started = std::time::Instant::now();
    delete_all(&previous);
    eprintln!(
        "final: {} delete_vm in {:.1} s",
        previous.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        pool_state(),
        before,
        "the pool differs after {rounds} rounds"
    );
}

fn delete_all(vms: &[String]) {
    std::thread::scope(|s| {
        let handles: Vec<_> = vms
            .iter()
            .map(|vm| s.spawn(move || shared().call("delete_vm", json!([vm]))))
            .collect();
        for h in handles {
            h.join().unwrap().ok();
        }
    });
}
