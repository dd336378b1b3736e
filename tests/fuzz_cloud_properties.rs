//! Bad input for a vm_type's cloud_properties: `VmCloudProperties::parse` never panics, and
//! whatever it accepts can be summarised and used to select from a pool without a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod fuzz_support;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use fuzz_support::{arb_json, damaged, fuzz};
use std::collections::BTreeSet;

use ironic_cpi::ironic::{Node, Port};
use ironic_cpi::mac::normalize_mac;
use ironic_cpi::pool::select::{free_queries, Criteria, Shortlist, Tally};
use ironic_cpi::vm_type::{VmCloudProperties, KNOWN_KEYS};

/// Nested names the generator also uses (inside ironic_properties, ironic_params, hints).
const NESTED_KEYS: [&str; 8] = [
    "cpus",
    "memory_mb",
    "local_gb",
    "cpu_arch",
    "driver",
    "driver_info",
    "size",
    "boot_mode",
];

/// Every key the CPI reads (so a new one is fuzzed too), plus nested names.
fn keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        KNOWN_KEYS
            .iter()
            .chain(NESTED_KEYS.iter())
            .copied()
            .collect()
    })
}

fn valid() -> Vec<Value> {
    vec![
        json!({"macs": ["52:54:00:aa:bb:01", "52:54:00:AA:BB:02"], "resource_class": "baremetal"}),
        json!({"ironic_properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"},
               "traits": ["CUSTOM_GPU"], "availability_zone": "z1",
               "root_device": {"size": ">= 100"}, "capabilities": {"boot_mode": "uefi"},
               "system_disk": "/dev/sda", "ephemeral_disk": "/dev/sdb", "clean_on_delete": true}),
        json!({"macs": ["52:54:00:aa:bb:03"], "ironic_params": {"driver": "ipmi",
               "driver_info": {"ipmi_address": "10.0.0.9", "ipmi_password": "x"},
               "properties": {"cpus": 4}}}),
        json!({}),
    ]
}

/// A small pool whose nodes have odd property values too, and its ports.
fn pool() -> (Vec<Node>, Vec<Port>) {
    let node = |uuid: &str, props: Value, rc: Option<&str>, state: &str| -> Node {
        serde_json::from_value(json!({"uuid": uuid, "name": uuid, "provision_state": state,
            "resource_class": rc, "properties": props, "traits": ["CUSTOM_GPU"],
            "extra": {"az": "z1"}}))
        .unwrap()
    };
    let nodes = vec![
        node(
            "n1",
            json!({"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"}),
            Some("baremetal"),
            "available",
        ),
        node(
            "n2",
            json!({"cpus": "8", "memory_mb": null, "local_gb": -1}),
            None,
            "manageable",
        ),
        node(
            "n3",
            json!({"cpus": 1e300, "capabilities": "boot_mode:uefi"}),
            Some("baremetal"),
            "available",
        ),
        node("n4", json!({}), Some(""), "active"),
    ];
    let ports = vec![
        Port {
            address: "52:54:00:aa:bb:01".into(),
            node_uuid: "n1".into(),
            ..Default::default()
        },
        Port {
            address: "52:54:00:aa:bb:02".into(),
            node_uuid: "n2".into(),
            ..Default::default()
        },
        Port {
            address: "not a mac".into(),
            node_uuid: "n3".into(),
            ..Default::default()
        },
    ];
    (nodes, ports)
}

/// The nodes owning any of `macs`, as create_vm finds them by `?address=`.
fn owners(ports: &[Port], macs: &[String]) -> BTreeSet<String> {
    ports
        .iter()
        .filter(|p| {
            normalize_mac(&p.address)
                .is_some_and(|a| macs.iter().any(|m| m.eq_ignore_ascii_case(&a)))
        })
        .map(|p| p.node_uuid.clone())
        .collect()
}

/// What create_vm does with the criteria: the free-node queries, a shortlist and a tally.
fn select(nodes: &[Node], c: &Criteria) {
    let _ = free_queries(c, (1, 115));
    let _ = free_queries(c, (1, 1));
    let mut list = Shortlist::new(4);
    let mut tally = Tally::default();
    for n in nodes {
        tally.count(n, c);
        let _ = list.offer(n.clone(), c, &mut rand::rng());
    }
    assert!(list.len() <= 4 && list.len() <= tally.free);
    let _ = tally.explain();
}

fn inputs() -> impl Strategy<Value = Map<String, Value>> {
    let seeds = proptest::sample::select(valid()).prop_flat_map(|v| damaged(v, keys()));
    prop_oneof![1 => arb_json(keys()), 4 => seeds].prop_map(|v| match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("macs".into(), other);
            m
        }
    })
}

#[test]
fn cloud_properties_never_panic() {
    let (nodes, ports) = pool();
    fuzz("cloud_properties", inputs(), |raw| {
        let Ok(props) = VmCloudProperties::parse(&raw) else {
            return Ok(false);
        };
        let _ = props.selector_summary();
        let mac_nodes = owners(&ports, &props.macs);
        for az_field in [
            "extra/az",
            "extra.az",
            "conductor_group",
            "owner",
            "resource_class",
            "properties/nope",
            "",
        ] {
            let criteria = Criteria {
                props: &props,
                az_field,
                pinned_node: Some("n1"),
                mac_nodes: &mac_nodes,
            };
            select(&nodes, &criteria);
            let criteria = Criteria {
                pinned_node: None,
                ..criteria
            };
            select(&nodes, &criteria);
        }
        Ok(true)
    });
}
