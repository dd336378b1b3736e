//! Bad input for the CPI config file and the cpi-config properties laid over it from the
//! request's context: `Config::from_value` (after `config::overlay`) never panics, and a config
//! it accepts gives an Ironic client and durations without a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod fuzz_support;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use fuzz_support::{arb_json, damaged, fuzz};
use ironic_cpi::config::{overlay, Config};
use ironic_cpi::ironic::IronicClient;

const KEYS: &[&str] = &[
    "ironic",
    "url",
    "auth",
    "type",
    "username",
    "password",
    "token",
    "auth_url",
    "microversion",
    "min",
    "max",
    "connect_timeout",
    "request_timeout",
    "retry",
    "max_attempts",
    "initial_delay",
    "max_delay",
    "poll",
    "initial_interval",
    "factor",
    "max_interval",
    "jitter",
    "timeouts",
    "deploy",
    "provide",
    "undeploy",
    "clean",
    "manage",
    "power",
    "page_size",
    "clean_on_delete",
    "clean_steps",
    "stemcell_repository",
    "metadata_repository",
    "registry",
    "endpoint",
    "agent",
    "mbus",
    "ntp",
    "blobstore",
    "defaults",
    "system_disk",
    "unused_nic_policy",
    "configdrive_inline_max_bytes",
    "availability_zone_field",
    "public_keys",
];

fn valid() -> Vec<Value> {
    let repo = json!({"url": "http://10.0.0.5:25250/images", "username": "w",
                      "password": "pw", "timeout": 60});
    vec![
        json!({"ironic": {"url": "http://127.0.0.1:6385"}}),
        json!({
            "ironic": {
                "url": "https://ironic.example:6385",
                "auth": {"type": "http_basic", "username": "u", "password": "p"},
                "microversion": {"min": "1.52", "max": "1.115"},
                "connect_timeout": 5.0, "request_timeout": 60.0,
                "retry": {"max_attempts": 10, "initial_delay": 0.2, "max_delay": 2.0},
                "poll": {"initial_interval": 0.1, "factor": 1.5, "max_interval": 1.0, "jitter": 0.1},
                "timeouts": {"deploy": 60.0, "provide": 60.0, "undeploy": 60.0, "clean": 60.0,
                             "manage": 60.0, "power": 60.0},
                "page_size": 1000, "clean_on_delete": true,
                "clean_steps": [{"interface": "deploy", "step": "erase_devices_metadata"}]
            },
            "stemcell_repository": repo,
            "metadata_repository": repo,
            "registry": {"endpoint": "http://10.0.0.5:25777", "username": "r", "password": "rp"},
            "agent": {"mbus": "nats://n:pw@10.0.0.6:4222", "ntp": ["0.pool.ntp.org"],
                      "blobstore": {"provider": "dav", "options": {"endpoint": "http://x"}}},
            "defaults": {"system_disk": "/dev/sda", "unused_nic_policy": "dhcp",
                         "configdrive_inline_max_bytes": 48000, "public_keys": ["ssh-ed25519 AAAA"]}
        }),
        json!({"ironic": {"url": "http://[::1]:6385", "auth": {"type": "keystone_password",
               "auth_url": "http://k:5000/v3", "username": "u", "password": "p",
               "project_name": "p"}}}),
        json!({"ironic": {"url": "http://i:6385", "auth": {"type": "token", "token": "t"}}}),
    ]
}

fn inputs() -> impl Strategy<Value = (Value, Map<String, Value>)> {
    let config = prop_oneof![
        1 => arb_json(KEYS),
        6 => proptest::sample::select(valid()).prop_flat_map(|v| damaged(v, KEYS)),
    ];
    let overrides = prop_oneof![
        3 => Just(Value::Object(Map::new())),
        1 => damaged(json!({"ironic": {"timeouts": {"deploy": 30}}, "defaults": {}}), KEYS),
    ]
    .prop_map(|v| match v {
        Value::Object(m) => m,
        other => [("ironic".to_string(), other)].into_iter().collect(),
    });
    (config, overrides)
}

#[test]
fn config_documents_never_panic() {
    fuzz("config", inputs(), |(mut doc, overrides)| {
        overlay(&mut doc, &overrides);
        let Ok(config) = Config::from_value(doc) else {
            return Ok(false);
        };
        // The arithmetic the waits do with every duration the config can hold.
        let t = &config.ironic.timeouts;
        let c = &config.ironic;
        for s in [t.deploy, t.provide, t.undeploy, t.clean, t.manage, t.power]
            .into_iter()
            .chain([c.connect_timeout, c.request_timeout, c.poll.max_interval])
        {
            let _ = std::time::Instant::now() + s.get() + s.get();
        }
        let _ = IronicClient::new(&config.ironic);
        Ok(true)
    });
}

/// Durations that are finite but larger than `Duration` or `Instant` can hold are refused with
/// the key's name, not accepted and then a panic when the client or a wait uses them.
#[test]
fn huge_durations_are_refused_naming_the_key() {
    let keys: [&[&str]; 13] = [
        &["ironic", "connect_timeout"],
        &["ironic", "request_timeout"],
        &["ironic", "retry", "initial_delay"],
        &["ironic", "retry", "max_delay"],
        &["ironic", "poll", "initial_interval"],
        &["ironic", "poll", "max_interval"],
        &["ironic", "timeouts", "deploy"],
        &["ironic", "timeouts", "provide"],
        &["ironic", "timeouts", "undeploy"],
        &["ironic", "timeouts", "clean"],
        &["ironic", "timeouts", "manage"],
        &["ironic", "timeouts", "power"],
        &["stemcell_repository", "timeout"],
    ];
    for key in keys {
        for huge in [1e300, 2e19, 1e12] {
            let mut doc = json!({"ironic": {"url": "http://127.0.0.1:6385"},
                "stemcell_repository": {"url": "http://127.0.0.1:25250/images"}});
            let mut at = &mut doc;
            for k in &key[..key.len() - 1] {
                if at.get(*k).is_none() {
                    at[*k] = json!({});
                }
                at = &mut at[*k];
            }
            at[key[key.len() - 1]] = json!(huge);
            let name = key.join(".");
            match Config::from_value(doc) {
                Err(e) => assert!(e.message.contains(&name), "{name}: {}", e.message),
                Ok(_) => panic!("{name} = {huge} was accepted"),
            }
        }
    }
}
