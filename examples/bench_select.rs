//! Benchmark: node selection in memory (`pool::select`) over streams of 1,000 and 10,000 nodes:
//! the check and ranking create_vm runs on every node a listing returns (a shortlist of the best
//! four), and the tally of rejections it runs over the whole pool when no node is free. Prints
//! medians; asserts nothing.
//!
//! ```text
//! cargo run --release --example bench_select -- [ITERATIONS]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::time::Instant;

use serde_json::{json, Map, Value};

use std::collections::BTreeSet;

use ironic_cpi::ironic::Node;
use ironic_cpi::pool::select::{Criteria, Shortlist, Tally};
use ironic_cpi::vm_type::VmCloudProperties;
use ironic_cpi_testkit::figures::median;

/// A varied pool: three hardware sizes, four resource classes, a fifth of the nodes busy.
fn pool(n: usize) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let uuid = format!("00000000-0000-4000-8000-{i:012x}");
        let size = [(8, 16384, 100), (16, 65536, 400), (32, 131072, 800)][i % 3];
        let class = ["baremetal", "gpu", "storage", "compute"][i % 4];
        let node: Node = serde_json::from_value(json!({
            "uuid": uuid, "name": format!("node-{i}"),
            "provision_state": if i % 5 == 0 { "active" } else { "available" },
            "instance_uuid": if i % 5 == 0 { Some(format!("vm-{i}")) } else { None },
            "power_state": "power off", "maintenance": false,
            "resource_class": class,
            "traits": if i % 2 == 0 { vec!["CUSTOM_RAID"] } else { vec![] },
            "properties": {"cpus": size.0, "memory_mb": size.1, "local_gb": size.2,
                           "cpu_arch": "x86_64"},
            "extra": {}, "driver": "ipmi",
        }))
        .expect("node document");
        nodes.push(node);
    }
    nodes
}

fn main() {
    let iterations: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 200,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: bench_select [ITERATIONS]");
            std::process::exit(2);
        }
    };
    let raw: Map<String, Value> = serde_json::from_value(json!({
        "resource_class": "baremetal",
        "ironic_properties": {"cpus": 16, "memory_mb": 32768, "cpu_arch": "x86_64"},
        "traits": ["CUSTOM_RAID"],
    }))
    .expect("cloud_properties");
    let props = VmCloudProperties::parse(&raw).expect("valid cloud_properties");
    let none = BTreeSet::new();
    let criteria = Criteria {
        props: &props,
        az_field: "conductor_group",
        pinned_node: None,
        mac_nodes: &none,
    };
    let mut rng = rand::rng();
    for n in [1_000usize, 10_000] {
        let nodes = pool(n);
        let mut shortlists = Vec::new();
        let mut tallies = Vec::new();
        let mut free = 0;
        for _ in 0..iterations.max(1) {
            let stream = nodes.clone();
            let t = Instant::now();
            let mut list = Shortlist::new(4);
            for node in stream {
                let _ = list.offer(node, &criteria, &mut rng);
            }
            shortlists.push(t.elapsed());
            let t = Instant::now();
            let mut tally = Tally::default();
            nodes.iter().for_each(|node| tally.count(node, &criteria));
            tallies.push(t.elapsed());
            free = tally.free;
        }
        let (s, t) = (median(&shortlists), median(&tallies));
        println!(
            "select {n} nodes: shortlist {:.3} ms, tally {:.3} ms, total {:.3} ms (median of {iterations}; {free} free candidates)",
            s.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            (s + t).as_secs_f64() * 1e3,
        );
    }
}
