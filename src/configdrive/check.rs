//! create_vm's input, checked before anything in Ironic changes: what the agent would refuse at
//! boot (long after create_vm answered) is refused now, naming the argument and the key.

use serde_json::{Map, Value};

use super::networks::{check_networks, json_type};
use crate::error::{CpiError, Result};

/// The longest agent id accepted. The director and the CLI send UUIDs (36 characters).
pub const MAX_AGENT_ID: usize = 128;
/// The largest `env` accepted, as JSON. The director's is a few KiB (certificates); a drive
/// above Ironic's inline limit is published, but a VM's settings never need megabytes.
pub const MAX_ENV_BYTES: usize = 1024 * 1024;

/// The agent id becomes a file name on the VM and the registry key: letters, digits, `-`, `_`,
/// `.` only.
pub fn check_agent_id(agent_id: &str) -> Result<()> {
    let ok_chars = agent_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if agent_id.is_empty() || agent_id.len() > MAX_AGENT_ID || !ok_chars {
        let shown: String = agent_id
            .chars()
            .take(40)
            .flat_map(char::escape_debug)
            .collect();
        return Err(CpiError::cloud(format!(
            "create_vm agent_id '{shown}{}' ({} bytes) is not an agent id: expected 1 to \
             {MAX_AGENT_ID} letters, digits, '-', '_' or '.' (the director sends a UUID)",
            if agent_id.chars().count() > 40 {
                "…"
            } else {
                ""
            },
            agent_id.len()
        )));
    }
    Ok(())
}

/// Networks (on their own) and `env`.
pub fn check_input(networks: &Map<String, Value>, env: &Map<String, Value>) -> Result<()> {
    check_networks(networks)?;
    check_env(env)
}

/// `env` is copied into the agent's settings; the agent decodes the keys below with Go's
/// `encoding/json`, which refuses the whole document on one field of the wrong type.
pub fn check_env(env: &Map<String, Value>) -> Result<()> {
    let size = serde_json::to_vec(env)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_ENV_BYTES {
        return Err(CpiError::cloud(format!(
            "create_vm env is {size} bytes as JSON, more than the {MAX_ENV_BYTES} a VM's \
             settings may carry"
        )));
    }
    for (key, kind) in ENV_TYPES {
        let mut value = Some(&Value::Object(env.clone()));
        for part in key.split('.') {
            value = value.and_then(|v| v.get(part));
        }
        if let Some(v) = value {
            if !kind.accepts(v) {
                return Err(CpiError::cloud(format!(
                    "create_vm env.{key} must be {}, got {}: the agent would refuse the VM's \
                     settings at boot",
                    kind.describe(),
                    json_type(v)
                )));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Object,
    String,
    Bool,
    Int,
    StringList,
    ObjectList,
}

impl Kind {
    fn accepts(self, v: &Value) -> bool {
        if v.is_null() {
            // Go leaves a null field at its zero value.
            return true;
        }
        match self {
            Kind::Object => v.is_object(),
            Kind::String => v.is_string(),
            Kind::Bool => v.is_boolean(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::StringList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Kind::ObjectList => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::String => "a string",
            Kind::Bool => "true or false",
            Kind::Int => "a whole number",
            Kind::StringList => "a list of strings",
            Kind::ObjectList => "a list of objects",
        }
    }
}

/// `env` fields of `settings.Env` and `settings.BoshEnv` (bosh-agent `settings/settings.go`).
const ENV_TYPES: [(&str, Kind); 20] = [
    ("bosh", Kind::Object),
    ("bosh.password", Kind::String),
    ("bosh.keep_root_password", Kind::Bool),
    ("bosh.remove_dev_tools", Kind::Bool),
    ("bosh.remove_static_libraries", Kind::Bool),
    ("bosh.authorized_keys", Kind::StringList),
    ("bosh.swap_size", Kind::Int),
    ("bosh.parallel", Kind::Int),
    ("bosh.ntp", Kind::StringList),
    ("bosh.blobstores", Kind::ObjectList),
    ("bosh.mbus", Kind::Object),
    ("bosh.mbus.cert", Kind::Object),
    ("bosh.mbus.cert.ca", Kind::String),
    ("bosh.mbus.cert.certificate", Kind::String),
    ("bosh.mbus.cert.private_key", Kind::String),
    ("bosh.mbus.urls", Kind::StringList),
    ("bosh.ipv6", Kind::Object),
    ("persistent_disk_fs", Kind::String),
    ("persistent_disk_mount_options", Kind::StringList),
    ("persistent_disk_partitioner", Kind::String),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_ids_are_short_and_plain() {
        check_agent_id("4b9ea2d3-57a2-4a62-b2d4-6f5e1a2b3c4d").unwrap();
        for bad in [
            "",
            "a b",
            "../x",
            &"x".repeat(MAX_AGENT_ID + 1),
            "\u{1b}[2J",
        ] {
            let e = check_agent_id(bad).unwrap_err();
            assert!(e.message.contains("agent_id"), "{e}");
            assert!(!e.message.contains('\u{1b}'));
        }
        let e = check_agent_id(&"y".repeat(1 << 20)).unwrap_err();
        assert!(e.message.len() < 400, "the message stays short");
    }

    #[test]
    fn env_types_the_agent_decodes_are_checked() {
        let ok = json!({"bosh": {"password": "x", "swap_size": 0, "keep_root_password": false,
                        "mbus": {"cert": {"ca": "c", "certificate": "c", "private_key": "k"}},
                        "authorized_keys": ["ssh-ed25519 A"], "group": "g", "tags": {"a": "b"}},
                        "persistent_disk_fs": "ext4", "other": 1});
        check_env(ok.as_object().unwrap()).unwrap();
        for (bad, key) in [
            (json!({"bosh": "x"}), "env.bosh "),
            (json!({"bosh": {"swap_size": "1G"}}), "env.bosh.swap_size"),
            (
                json!({"bosh": {"keep_root_password": "yes"}}),
                "keep_root_password",
            ),
            (
                json!({"bosh": {"mbus": {"cert": {"ca": 7}}}}),
                "bosh.mbus.cert.ca",
            ),
            (
                json!({"persistent_disk_mount_options": "noatime"}),
                "mount_options",
            ),
        ] {
            let e = check_env(bad.as_object().unwrap()).unwrap_err();
            assert!(e.message.contains(key), "{key}: {e}");
        }
        let big = json!({"blob": "z".repeat(MAX_ENV_BYTES)});
        assert!(check_env(big.as_object().unwrap())
            .unwrap_err()
            .message
            .contains("bytes"));
    }

    #[test]
    fn networks_are_checked_without_a_node() {
        let nets = json!({"default": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0",
                                      "gateway": "10.0.0.1"}});
        check_input(nets.as_object().unwrap(), &Map::new()).unwrap();
        for (bad, words) in [
            (
                json!({"n": {"type": "manual", "ip": "10.0.0.500", "netmask": "255.255.255.0"}}),
                "not an IP",
            ),
            (
                json!({"n": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.0.255.0"}}),
                "contiguous",
            ),
            (
                json!({"n": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "fe80::1"}}),
                "family",
            ),
            (json!({"n": {"type": "dynamic", "mac": "zz"}}), "not a MAC"),
            (json!({"n": {"type": "warp"}}), "unknown type"),
            (json!({"n": 5}), "expected an object"),
        ] {
            let e = check_input(bad.as_object().unwrap(), &Map::new()).unwrap_err();
            assert!(e.message.contains(words), "{words}: {e}");
        }
    }
}
