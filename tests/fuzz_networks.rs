//! Bad input for the director's networks hash and the rest of a config drive:
//! `configdrive::map_networks` and `configdrive::build` never panic, whatever the networks,
//! the node's MACs (Ironic's ports), the env and the policies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod fuzz_support;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use fuzz_support::{arb_json, damaged, fuzz, nasty_string};
use ironic_cpi::config::{AgentConfig, Defaults, Secret, UnusedNicPolicy};
use ironic_cpi::configdrive::{build, map_networks, DiskLayout, DriveInput};

const KEYS: &[&str] = &[
    "type",
    "ip",
    "netmask",
    "gateway",
    "dns",
    "default",
    "prefix",
    "mac",
    "cloud_properties",
    "macs",
    "nic_group",
    "use_dhcp",
    "routes",
    "alias",
    "preconfigured",
    "default",
    "private",
    "public",
    "bosh",
    "password",
    "mbus",
];

fn valid_networks() -> Vec<Value> {
    vec![
        json!({"default": {"type": "manual", "ip": "10.0.16.21", "netmask": "255.255.255.0",
            "gateway": "10.0.16.1", "dns": ["10.0.16.2"], "default": ["dns", "gateway"],
            "prefix": "24", "cloud_properties": {"macs": ["52:54:00:00:00:01"]}}}),
        json!({"private": {"type": "manual", "ip": "10.0.1.5", "netmask": "255.255.255.0",
                "gateway": "10.0.1.1", "mac": "52:54:00:00:00:02", "cloud_properties": {}},
               "dhcp": {"type": "dynamic", "dns": ["8.8.8.8"], "cloud_properties": {}},
               "public": {"type": "vip", "ip": "203.0.113.9", "cloud_properties": {}}}),
        json!({"v6": {"type": "manual", "ip": "fd00::5", "netmask": "ffff:ffff:ffff:ffff::",
            "gateway": "fd00::1", "prefix": "64", "default": ["gateway"], "cloud_properties": {}}}),
        json!({}),
    ]
}

fn macs() -> impl Strategy<Value = Vec<String>> {
    let mac = prop_oneof![
        3 => proptest::sample::select(vec![
            "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:01",
            "52:54:00:AA:00:01"
        ]).prop_map(str::to_string),
        1 => nasty_string(),
    ];
    proptest::collection::vec(mac, 0..5)
}

#[derive(Debug)]
struct Input {
    networks: Map<String, Value>,
    macs: Vec<String>,
    env: Value,
    policy: UnusedNicPolicy,
    preconfigured: bool,
    registry: Option<String>,
    agent_id: String,
}

fn inputs() -> impl Strategy<Value = Input> {
    let networks = prop_oneof![
        1 => arb_json(KEYS),
        4 => proptest::sample::select(valid_networks()).prop_flat_map(|v| damaged(v, KEYS)),
    ]
    .prop_map(|v| match v {
        Value::Object(m) => m,
        other => [("default".to_string(), other)].into_iter().collect(),
    });
    let env = damaged(
        json!({"bosh": {"password": "$6$x", "mbus": {"cert": {"private_key": "k"}}}}),
        KEYS,
    );
    (
        networks,
        macs(),
        env,
        proptest::sample::select(vec![
            UnusedNicPolicy::Loopback,
            UnusedNicPolicy::Dhcp,
            UnusedNicPolicy::None,
        ]),
        any::<bool>(),
        proptest::option::of(prop_oneof!["http://[a-z]{1,5}:25777", nasty_string()]),
        prop_oneof![Just("agent-1".to_string()), nasty_string()],
    )
        .prop_map(
            |(networks, macs, env, policy, preconfigured, registry, agent_id)| Input {
                networks,
                macs,
                env,
                policy,
                preconfigured,
                registry,
                agent_id,
            },
        )
}

#[test]
fn networks_and_config_drives_never_panic() {
    let agent = AgentConfig {
        mbus: Some(Secret::new("nats://n:pw@10.0.0.6:4222")),
        ntp: vec!["0.pool.ntp.org".into()],
        blobstore: Some(json!({"provider": "dav"})),
    };
    fuzz("networks", inputs(), |input| {
        // The first MAC boots by PXE (or none does, on a node without ports).
        let pxe = &input.macs[..input.macs.len().min(1)];
        let mapped = map_networks(
            "node-1",
            &input.macs,
            pxe,
            &input.networks,
            input.policy,
            input.preconfigured,
        );
        let defaults = Defaults {
            unused_nic_policy: input.policy,
            networks_preconfigured: input.preconfigured,
            ..Defaults::default()
        };
        let persistent = Map::new();
        if let Ok(drive) = build(&DriveInput {
            agent_id: &input.agent_id,
            node_uuid: "node-1",
            node_macs: &input.macs,
            pxe_macs: pxe,
            networks: &input.networks,
            env: &input.env,
            agent: &agent,
            defaults: &defaults,
            disks: &DiskLayout::from_defaults(&defaults),
            persistent_disks: &persistent,
            registry_endpoint: input.registry.as_deref(),
        }) {
            prop_assert!(!drive.iso().is_empty());
            prop_assert!(drive.base64_len() > 0);
            return Ok(true);
        }
        Ok(mapped.is_ok())
    });
}
