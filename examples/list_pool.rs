//! Benchmark: list a pool of N nodes and their ports the way create_vm does (one paginated node
//! list and one paginated port list with `fields=`, pages of 1,000), and print what it cost.
//!
//! ```text
//! cargo run --release --example list_pool -- [N]          # starts its own Ironic lab
//! IRONIC_URL=http://127.0.0.1:6385 cargo run --release --example list_pool -- 1000
//! ```
//!
//! Nodes named `pool-<i>` with two ports each are enrolled first (4 threads, through the client)
//! when fewer than N exist.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ironic_cpi::config::Config;
use ironic_cpi::ironic::{IronicClient, NodeQuery, PortQuery};
use ironic_cpi_testkit::ironic::{lab_mac, IronicLab, IronicLabOptions};
use serde_json::json;

const THREADS: usize = 4;

fn main() {
    if let Err(e) = run() {
        eprintln!("list_pool: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("N must be a number, not '{a}'"))?,
        None => 1000,
    };
    // Without IRONIC_URL, a lab of our own (dropped, and so stopped, at the end).
    let lab = match std::env::var("IRONIC_URL") {
        Ok(_) => None,
        Err(_) => Some(IronicLab::start(IronicLabOptions::default())?),
    };
    let url = match &lab {
        Some(l) => l.url.clone(),
        None => std::env::var("IRONIC_URL").unwrap_or_default(),
    };
    let cfg = Config::from_value(json!({"ironic": {"url": url, "page_size": 1000}}))
        .map_err(|e| e.to_string())?;

    let setup = IronicClient::new(&cfg.ironic).map_err(|e| e.to_string())?;
    let existing = setup
        .list_nodes(&NodeQuery {
            fields: vec!["uuid".into(), "name".into()],
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    let have: std::collections::HashSet<String> =
        existing.into_iter().filter_map(|node| node.name).collect();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !have.contains(&format!("pool-{i}")))
        .collect();
    if !missing.is_empty() {
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let failures = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    while let Some(&i) = missing.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Err(e) = enroll(&setup, i) {
                            eprintln!("pool-{i}: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        println!(
            "enrolled {} nodes with 2 ports each in {:.1} s ({} requests, {} failures)",
            missing.len(),
            started.elapsed().as_secs_f64(),
            setup.request_count(),
            failures.load(Ordering::Relaxed)
        );
    }

    // A fresh client, so its count includes the microversion negotiation, as in a CPI call.
    let client = IronicClient::new(&cfg.ironic).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let nodes = client
        .list_nodes(&NodeQuery {
            fields: [
                "uuid",
                "name",
                "provision_state",
                "power_state",
                "maintenance",
                "instance_uuid",
                "resource_class",
                "properties",
                "traits",
                "conductor_group",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    let ports = client
        .list_ports(&PortQuery {
            fields: vec!["uuid".into(), "address".into(), "node_uuid".into()],
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    println!("nodes: {}", nodes.len());
    println!("ports: {}", ports.len());
    println!("HTTP requests: {}", client.request_count());
    println!("seconds: {secs:.3}");
    Ok(())
}

fn enroll(client: &IronicClient, i: usize) -> Result<(), String> {
    let node = client
        .create_node(&json!({
            "name": format!("pool-{i}"),
            "driver": "fake-hardware",
            "resource_class": "pool",
            "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"},
        }))
        .map_err(|e| e.to_string())?;
    for nic in 0..2 {
        client
            .create_port(&node.uuid, &lab_mac(0xee, i as u16, nic), None)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
