//! Benchmark: node selection in memory (`pool::select`) over pools of 1,000 and 10,000 nodes
//! with 2 ports each, as create_vm runs it after listing the pool: build the snapshot (join
//! ports to nodes), then filter and rank for a vm_type. Prints medians; asserts nothing.
//!
//! ```text
//! cargo run --release --example bench_select -- [ITERATIONS]
//! ```

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use ironic_cpi::ironic::{Node, Port};
use ironic_cpi::pool::cloud_properties::VmCloudProperties;
use ironic_cpi::pool::select::{select, Criteria, PoolSnapshot};

/// A varied pool: three hardware sizes, four resource classes, a fifth of the nodes busy.
fn pool(n: usize) -> (Vec<Node>, Vec<Port>) {
    let mut nodes = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(2 * n);
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
        for nic in 0..2 {
            ports.push(Port {
                uuid: format!("p-{i}-{nic}"),
                address: format!(
                    "52:54:{:02x}:{:02x}:{:02x}:{nic:02x}",
                    i >> 16,
                    (i >> 8) & 0xff,
                    i & 0xff
                ),
                node_uuid: uuid.clone(),
                ..Default::default()
            });
        }
        nodes.push(node);
    }
    (nodes, ports)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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
    let criteria = Criteria {
        props: &props,
        az_field: "conductor_group",
        pinned_node: None,
    };
    let mut rng = rand::rng();
    for n in [1_000usize, 10_000] {
        let (nodes, ports) = pool(n);
        let mut build = Vec::new();
        let mut choose = Vec::new();
        let mut candidates = 0;
        for _ in 0..iterations.max(1) {
            let (nodes, ports) = (nodes.clone(), ports.clone());
            let t = Instant::now();
            let snapshot = PoolSnapshot::new(nodes, ports);
            build.push(t.elapsed());
            let t = Instant::now();
            let selection = select(&snapshot, &criteria, &mut rng);
            choose.push(t.elapsed());
            candidates = selection.candidates.len();
        }
        let (b, c) = (median(build), median(choose));
        println!(
            "select {n} nodes: snapshot {:.3} ms, select {:.3} ms, total {:.3} ms (median of {iterations}; {candidates} candidates)",
            b.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            (b + c).as_secs_f64() * 1e3
        );
    }
}
