//! The documents on the drive: user data (what the agent boots from), meta data (instance id and
//! the vcap key), and OpenStack's `network_data.json` for any other reader of the drive.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::networks::{string_list, NetworkKind};
use crate::error::Result;

/// Nameservers of all networks, each once: first those of the network that is default for
/// `dns`, then the others in name order (the order resolv.conf will try them in).
pub fn nameservers(networks: &Map<String, Value>) -> Result<Vec<String>> {
    let mut ordered: Vec<(&String, &Map<String, Value>)> = networks
        .iter()
        .filter_map(|(name, v)| v.as_object().map(|o| (name, o)))
        .collect();
    // Stable sort: `Map` already iterates in name order.
    ordered.sort_by_key(|(name, net)| {
        let is_default = string_list(name, net, "default")
            .map(|d| d.contains(&"dns"))
            .unwrap_or(false);
        !is_default
    });
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, net) in ordered {
        for server in string_list(name, net, "dns")? {
            if seen.insert(server) {
                out.push(server.to_string());
            }
        }
    }
    Ok(out)
}

/// The one user-data document that every agent generation understands (contract §4.3).
///
/// Registry-less: the full settings at top level (agents ≥ v2.478.0 decode it directly; older
/// ones see a non-empty `agent_id` and use it inline), plus `server.name` and `dns.nameserver`.
///
/// Registry mode: no settings, `agent_id` empty so that registry-era agents fetch them from
/// `registry.endpoint` under `server.name`; `networks` stays so that the agent can configure
/// its interfaces before it tries to reach the registry. No `dns` either: given nameservers,
/// v2.477.0 resolves the endpoint's host with `dig @<nameserver>` *before* it configures any
/// NIC (`configDriveMetadataService.GetRegistryEndpoint`, then `SetupNetworking`), which
/// cannot succeed on static networks; without them it keeps the URL as it is and resolves the
/// name normally once the networks (which carry the same nameservers) are up.
pub fn user_data(
    settings: &Value,
    server_name: &str,
    nameservers: &[String],
    registry_endpoint: Option<&str>,
) -> Value {
    let mut doc = match registry_endpoint {
        None => settings.as_object().cloned().unwrap_or_default(),
        Some(endpoint) => {
            let mut m = Map::new();
            m.insert("agent_id".into(), Value::String(String::new()));
            m.insert("registry".into(), json!({ "endpoint": endpoint }));
            if let Some(networks) = settings.get("networks") {
                m.insert("networks".into(), networks.clone());
            }
            m
        }
    };
    doc.insert("server".into(), json!({ "name": server_name }));
    if !nameservers.is_empty() && registry_endpoint.is_none() {
        doc.insert("dns".into(), json!({ "nameserver": nameservers }));
    }
    Value::Object(doc)
}

/// The public keys that are set, in order; blank entries are ignored.
fn keys(public_keys: &[String]) -> Vec<&str> {
    public_keys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect()
}

/// `ec2/latest/meta-data.json` as the agent decodes it (`MetadataContentsType`).
///
/// Key "0" is always written, empty when there is no key: agents up to v2.477.0 abort bootstrap
/// ("Getting iaas public key") when it is missing, and an empty key is skipped by all of them.
pub fn ec2_meta_data(instance_id: &str, public_keys: &[String]) -> Value {
    let keys = keys(public_keys);
    let mut pk = Map::new();
    pk.insert(
        "0".into(),
        json!({ "openssh-key": keys.first().copied().unwrap_or("") }),
    );
    for (i, key) in keys.iter().enumerate().skip(1) {
        pk.insert(i.to_string(), json!({ "openssh-key": key }));
    }
    json!({ "instance-id": instance_id, "public-keys": pk })
}

/// `openstack/latest/meta_data.json` in OpenStack's own format (for cloud-init, glean and
/// people), carrying the EC2-style keys as well so that an agent pointed at this file by a
/// custom `agent.json` still finds what it looks for.
pub fn openstack_meta_data(instance_id: &str, public_keys: &[String]) -> Value {
    let keys = keys(public_keys);
    let mut doc = ec2_meta_data(instance_id, public_keys);
    if let Value::Object(m) = &mut doc {
        let named: Map<String, Value> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (i.to_string(), Value::String(k.to_string())))
            .collect();
        let listed: Vec<Value> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| json!({ "name": i.to_string(), "type": "ssh", "data": k }))
            .collect();
        m.insert("uuid".into(), Value::String(instance_id.into()));
        m.insert("name".into(), Value::String(instance_id.into()));
        m.insert("hostname".into(), Value::String(instance_id.into()));
        m.insert("launch_index".into(), json!(0));
        m.insert("public_keys".into(), Value::Object(named));
        m.insert("keys".into(), Value::Array(listed));
    }
    doc
}

/// Link id in network_data.json for a MAC (stable whatever the number of NICs).
fn link_id(mac: &str) -> String {
    format!("port-{}", mac.replace(':', ""))
}

/// OpenStack `network_data.json`: one `phy` link per node MAC, one network per configured
/// BOSH network, DNS as services.
///
/// Loopback placeholders for unused NICs are left out: they exist only to satisfy old BOSH
/// agents, and another reader would put 127.0.0.x on a physical NIC.
pub fn network_data(
    node_macs: &[String],
    agent_networks: &Map<String, Value>,
    director_networks: &Map<String, Value>,
    nameservers: &[String],
) -> Result<Value> {
    let links: Vec<Value> = node_macs
        .iter()
        .map(|mac| {
            json!({
                "id": link_id(mac),
                "type": "phy",
                "ethernet_mac_address": mac,
            })
        })
        .collect();

    let only_one = director_networks.len() == 1;
    let mut networks = Vec::new();
    for (name, v) in agent_networks {
        let Some(net) = v.as_object() else { continue };
        let Some(mac) = net.get("mac").and_then(Value::as_str) else {
            continue;
        };
        let kind = NetworkKind::of(name, net)?;
        let placeholder = !director_networks.contains_key(name);
        let mut entry = Map::new();
        entry.insert("id".into(), Value::String(name.clone()));
        entry.insert("network_id".into(), Value::String(name.clone()));
        entry.insert("link".into(), Value::String(link_id(mac)));
        match kind {
            NetworkKind::Vip => continue,
            NetworkKind::Manual if placeholder => continue,
            NetworkKind::Dynamic => {
                // BOSH dynamic networks do not name a family; they mean DHCPv4 in practice.
                entry.insert("type".into(), Value::String("ipv4_dhcp".into()));
            }
            NetworkKind::Manual => {
                let ip = net.get("ip").and_then(Value::as_str).unwrap_or_default();
                let v6 = ip.contains(':');
                entry.insert(
                    "type".into(),
                    Value::String(if v6 { "ipv6" } else { "ipv4" }.into()),
                );
                entry.insert("ip_address".into(), Value::String(ip.into()));
                if let Some(mask) = net.get("netmask") {
                    entry.insert("netmask".into(), mask.clone());
                }
                let gateway = net
                    .get("gateway")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty());
                let is_default_gw = only_one
                    || string_list(name, net, "default")
                        .map(|d| d.contains(&"gateway"))
                        .unwrap_or(false);
                let mut routes = Vec::new();
                if let (Some(gw), true) = (gateway, is_default_gw) {
                    let any = if v6 { "::" } else { "0.0.0.0" };
                    routes.push(json!({ "network": any, "netmask": any, "gateway": gw }));
                }
                entry.insert("routes".into(), Value::Array(routes));
                let dns: Vec<Value> = string_list(name, net, "dns")?
                    .into_iter()
                    .map(|a| json!({ "type": "dns", "address": a }))
                    .collect();
                if !dns.is_empty() {
                    entry.insert("services".into(), Value::Array(dns));
                }
            }
        }
        networks.push(Value::Object(entry));
    }

    let services: Vec<Value> = nameservers
        .iter()
        .map(|a| json!({ "type": "dns", "address": a }))
        .collect();
    Ok(json!({ "links": links, "networks": networks, "services": services }))
}
