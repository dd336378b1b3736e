//! Many create_vm processes at once against one pool, as the director's 32 threads run them:
//! no node is handed out twice, the calls beyond the pool's size fail with a retryable
//! `VMCreationFailed`, and once everything is deleted the pool is exactly as it was.
//!
//! Every CPI call is its own `ironic_cpi` process (the real binary), against the real Ironic.
//! A round is one wave of 32 and one of 40 calls; CI runs `IRONIC_CPI_CONCURRENCY_ROUNDS` rounds
//! (default 1, about 2 minutes on 2 cores); `bench/soak` runs more.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Value};

use ironic_cpi::lab::cpi::{CallOutcome, CpiLab};
use ironic_cpi::lab::ironic::{enroll_node, lab_mac, IronicLabOptions, NodeSpec};

const POOL: usize = 32;
const RC: &str = "rc-concurrency";

struct Shared {
    lab: CpiLab,
    stemcell: String,
    /// The lab's config with the CPI's default waits for Ironic's transitions instead of the
    /// lab's 60 s: what this test checks is who gets which node, and 32 fake deploys or
    /// cleanings at once on a loaded 2-core machine can take longer than that.
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static LAB: OnceLock<Shared> = OnceLock::new();
    LAB.get_or_init(|| {
        let lab = common::start_lab(IronicLabOptions::default(), false, false);
        let stemcell = common::upload_stemcell(&lab, None, 64 * 1024);
        enroll_pool(&lab);
        let dir = tempfile::tempdir().unwrap();
        let config = common::config_variant(&lab.config_path, dir.path(), "cpi.json", |c| {
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

/// 32 nodes, enrolled by 4 threads at once (each node walks enroll -> manageable -> available).
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
    common::pool_state(&shared().lab.client().unwrap(), RC)
}

fn create_vm(agent_id: &str) -> CallOutcome {
    let s = shared();
    let net = json!({"default": {"type": "manual", "ip": "10.0.40.10", "netmask": "255.255.255.0",
        "gateway": "10.0.40.1", "dns": ["10.0.40.2"], "default": ["dns", "gateway"],
        "prefix": "24", "cloud_properties": {}}});
    s.lab.call_with_config(
        &s.config,
        "create_vm",
        json!([agent_id, s.stemcell, {"resource_class": RC}, net, [], {"bosh": {"password": "x"}}]),
        2,
        Some(3),
    )
}

/// `n` create_vm processes started together; (agent_id, outcome) for each.
fn create_many(n: usize) -> Vec<(String, CallOutcome)> {
    let agents: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .map(|a| s.spawn(move || (a.clone(), create_vm(a))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn delete_all(vms: &[String]) {
    std::thread::scope(|s| {
        let handles: Vec<_> = vms
            .iter()
            .map(|vm| {
                s.spawn(move || {
                    let s = shared();
                    s.lab
                        .call_with_config(&s.config, "delete_vm", json!([vm]), 2, Some(3))
                })
            })
            .collect();
        for h in handles {
            let out = h.join().unwrap();
            out.ok();
        }
    });
}

/// One wave of `n` concurrent create_vm calls on the 32-node pool, checked, then deleted.
fn wave(n: usize, before: &[Value]) {
    let outcomes = create_many(n);
    let mut vms = Vec::new();
    let mut failures = Vec::new();
    for (agent, out) in &outcomes {
        if out.response["error"].is_null() {
            let vm = out.result()[0].as_str().unwrap().to_string();
            vms.push((agent.clone(), vm));
        } else {
            failures.push(out);
        }
    }
    let distinct: BTreeSet<&String> = vms.iter().map(|(_, vm)| vm).collect();
    assert_eq!(distinct.len(), vms.len(), "a node was handed out twice");
    assert_eq!(
        vms.len(),
        n.min(POOL),
        "{n} calls on {POOL} nodes: every node must be used, and only once; failures:\n{}",
        failures
            .iter()
            .map(|o| format!("{}\n{}", o.stdout, o.stderr))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for out in &failures {
        common::assert_retryable_creation_failure(out);
    }
    // Each node carries the agent that was told it got it.
    let client = shared().lab.client().unwrap();
    for (agent, vm) in &vms {
        let node = client.get_node(vm).unwrap();
        assert_eq!(node.provision_state.as_deref(), Some("active"));
        assert_eq!(
            node.instance_info["bosh_agent_id"],
            json!(agent),
            "node {vm}"
        );
        assert!(
            before.iter().any(|b| b["uuid"] == json!(vm)),
            "{vm} is not a pool node"
        );
    }
    let vm_ids: Vec<String> = vms.into_iter().map(|(_, vm)| vm).collect();
    delete_all(&vm_ids);
    assert_eq!(
        pool_state(),
        before,
        "the pool differs after {n} creates and deletes"
    );
}

#[test]
fn concurrent_create_vm_never_shares_a_node_and_the_pool_comes_back() {
    let _ = shared();
    let before = pool_state();
    assert_eq!(before.len(), POOL);
    let rounds: usize = std::env::var("IRONIC_CPI_CONCURRENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for round in 1..=rounds {
        let started = std::time::Instant::now();
        wave(POOL, &before);
        wave(POOL + 8, &before);
        eprintln!(
            "round {round}/{rounds}: {POOL} and {} concurrent create_vm + delete_vm in {:.1} s",
            POOL + 8,
            started.elapsed().as_secs_f64()
        );
    }
}
