//! Director networks → node NICs.
//!
//! The BOSH agent binds a network to the NIC whose `/sys/class/net/*/address` is byte-for-byte
//! equal to the network's `mac` (lower case, colons), and a `mac` that no NIC has is fatal at
//! boot ("No device found for network"). So every MAC written here is normalised, checked
//! against the node's Ironic ports, and every failure is reported now, with the network, node
//! and MACs named, instead of on a machine that never comes up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use crate::config::UnusedNicPolicy;
use crate::error::{CpiError, Result};
use std::str::FromStr;

use crate::mac::normalize_mac;

/// The result of matching the director's networks to a node's ports.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkMapping {
    /// The director's networks as given, plus `mac` on every non-vip network: what create_vm
    /// returns to the director (API v2).
    pub director: Map<String, Value>,
    /// What the agent gets: the director's networks made consistent (`mac`, `use_dhcp`,
    /// `netmask` + `prefix`, `preconfigured`) plus one entry per unused NIC as the policy says.
    pub agent: Map<String, Value>,
    /// The node's MACs, normalised, deduplicated and sorted.
    pub node_macs: Vec<String>,
}

/// How a network is configured on its NIC, decided once from `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    Manual,
    Dynamic,
    Vip,
}

impl NetworkKind {
    /// Old directors send no `type` for manual networks; the agent treats "" as manual too.
    pub fn of(name: &str, network: &Map<String, Value>) -> Result<NetworkKind> {
        match network.get("type") {
            None | Some(Value::Null) => Ok(NetworkKind::Manual),
            Some(Value::String(t)) => match t.as_str() {
                "manual" | "" => Ok(NetworkKind::Manual),
                "dynamic" => Ok(NetworkKind::Dynamic),
                "vip" => Ok(NetworkKind::Vip),
                other => Err(CpiError::cloud(format!(
                    "network '{name}': unknown type '{other}' (expected manual, dynamic or vip)"
                ))),
            },
            Some(other) => Err(CpiError::cpi(format!(
                "network '{name}': 'type' must be a string, got {}",
                json_type(other)
            ))),
        }
    }
}

/// First IP of the loopback placeholders, as the original Python CPI used (127.0.0.1xx).
const LOOPBACK_FIRST_HOST: usize = 100;
/// A placeholder is a single host address: the agent writes `Address=<ip>/<mask bits>` on the
/// physical NIC, and with /24 the kernel's route for 127.0.0.0/24 on that NIC would take every
/// other 127.0.0.x away from `lo` (127.0.0.53, where systemd-resolved listens, included).
const LOOPBACK_NETMASK: &str = "255.255.255.255";
const LOOPBACK_PREFIX: &str = "32";

/// Match `networks` (create_vm's 4th argument) to the node's ports.
///
/// Order of precedence, so that explicit wishes are honoured before anything is guessed:
/// 1. a network naming a `mac` keeps it (it must be one of the node's);
/// 2. a network whose `cloud_properties.macs` lists MACs gets the first of them the node has
///    (subnets list the MACs of every node they reach, so matching none is an error);
/// 3. the rest take the remaining MACs, networks in name order, MACs in sorted order; but the
///    default network (the one that carries the default gateway) first takes a NIC the node
///    boots from (`pxe_macs`: Ironic's `pxe_enabled` ports), which is the NIC cabled to the
///    provisioning network, so that the gateway does not land on a NIC chosen by name order.
///
/// `vip` networks are addresses held elsewhere and get no MAC.
pub fn map_networks(
    node_uuid: &str,
    node_macs: &[String],
    pxe_macs: &[String],
    networks: &Map<String, Value>,
    unused_nic_policy: UnusedNicPolicy,
    preconfigured: bool,
) -> Result<NetworkMapping> {
    let macs = node_mac_set(node_uuid, node_macs)?;
    let mac_list = || {
        if macs.is_empty() {
            "none: Ironic lists no ports for it".to_string()
        } else {
            macs.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };

    // name -> (network object, kind); BTreeMap-backed Map iterates in name order.
    let mut parsed: Vec<(&String, &Map<String, Value>, NetworkKind)> = Vec::new();
    for (name, value) in networks {
        let Value::Object(net) = value else {
            return Err(CpiError::cpi(format!(
                "network '{name}': expected an object, got {}",
                json_type(value)
            )));
        };
        parsed.push((name, net, NetworkKind::of(name, net)?));
    }

    let mut nics = Assignments::default();
    let claim = |nics: &mut Assignments, name: &str, mac: String| -> Result<()> {
        if let Some(other) = nics.by_mac.get(&mac) {
            return Err(CpiError::cloud(format!(
                "network '{name}' and network '{other}' both want NIC {mac} of node {node_uuid}: \
                 the agent configures one network per NIC; give them different MACs"
            )));
        }
        nics.by_mac.insert(mac.clone(), name.to_string());
        nics.by_network.insert(name.to_string(), mac);
        Ok(())
    };

    // 1. explicit `mac`
    for (name, net, kind) in &parsed {
        if *kind == NetworkKind::Vip {
            continue;
        }
        let Some(raw) = optional_str(name, net, "mac")? else {
            continue;
        };
        let mac = normalize_mac(raw).ok_or_else(|| {
            CpiError::cloud(format!(
                "network '{name}': mac '{raw}' is not a MAC address"
            ))
        })?;
        if !macs.contains(&mac) {
            return Err(CpiError::cloud(format!(
                "network '{name}' names MAC {mac}, which is not a port of node {node_uuid} \
                 (its MACs: {})",
                mac_list()
            )));
        }
        claim(&mut nics, name, mac)?;
    }

    // 2. `cloud_properties.macs`
    for (name, net, kind) in &parsed {
        if *kind == NetworkKind::Vip || nics.by_network.contains_key(name.as_str()) {
            continue;
        }
        let Some(wanted) = cloud_property_macs(name, net)? else {
            continue;
        };
        let on_node: Vec<&String> = wanted.iter().filter(|m| macs.contains(*m)).collect();
        if on_node.is_empty() {
            return Err(CpiError::cloud(format!(
                "network '{name}': none of the MACs in its cloud_properties.macs ({}) is a port \
                 of node {node_uuid} (its MACs: {})",
                wanted.join(", "),
                mac_list()
            )));
        }
        let Some(free) = on_node.iter().find(|m| !nics.by_mac.contains_key(**m)) else {
            return Err(CpiError::cloud(format!(
                "network '{name}': its cloud_properties.macs match NIC(s) {} of node {node_uuid}, \
                 but other networks already use them",
                on_node
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        claim(&mut nics, name, (*free).clone())?;
    }

    // 3. the default network on a free PXE NIC, then the rest in a stable order
    let pxe: BTreeSet<String> = pxe_macs
        .iter()
        .filter_map(|m| normalize_mac(m))
        .filter(|m| macs.contains(m))
        .collect();
    // Ironic enables PXE on every port unless told otherwise: only a proper subset says which
    // NIC is the boot NIC.
    let boot_nic_known = !pxe.is_empty() && pxe.len() < macs.len();
    if let Some(name) = default_gateway_network(&parsed).filter(|_| boot_nic_known) {
        if !nics.by_network.contains_key(name) {
            let free_pxe = macs
                .iter()
                .find(|m| pxe.contains(*m) && !nics.by_mac.contains_key(*m))
                .cloned();
            if let Some(mac) = free_pxe {
                claim(&mut nics, name, mac)?;
            }
        }
    }
    for (name, _, kind) in &parsed {
        if *kind == NetworkKind::Vip || nics.by_network.contains_key(name.as_str()) {
            continue;
        }
        let Some(free) = macs.iter().find(|m| !nics.by_mac.contains_key(*m)).cloned() else {
            let non_vip = parsed
                .iter()
                .filter(|(_, _, k)| *k != NetworkKind::Vip)
                .count();
            return Err(CpiError::cloud(format!(
                "node {node_uuid} has {} NIC(s) ({}) but the VM needs {non_vip} non-vip networks: \
                 no NIC left for network '{name}'",
                macs.len(),
                mac_list()
            )));
        };
        claim(&mut nics, name, free)?;
    }

    let mut director = Map::new();
    let mut agent = Map::new();
    for (name, net, kind) in &parsed {
        let mac = nics.by_network.get(name.as_str()).cloned();
        let mut with_mac = (*net).clone();
        if let Some(mac) = mac {
            with_mac.insert("mac".into(), Value::String(mac));
        }
        director.insert((*name).clone(), Value::Object(with_mac.clone()));
        agent.insert(
            (*name).clone(),
            Value::Object(agent_network(name, with_mac, *kind, preconfigured)?),
        );
    }

    let unused: Vec<&String> = macs
        .iter()
        .filter(|m| !nics.by_mac.contains_key(*m))
        .collect();
    add_unused_nics(&mut agent, &unused, unused_nic_policy, preconfigured)?;

    Ok(NetworkMapping {
        director,
        agent,
        node_macs: macs.into_iter().collect(),
    })
}

/// The non-vip network that carries the default gateway: the one whose `default` names
/// `gateway`, or the only one (the agent treats a single network as the default for all).
fn default_gateway_network<'a>(
    parsed: &[(&'a String, &Map<String, Value>, NetworkKind)],
) -> Option<&'a str> {
    let candidates: Vec<&(&String, &Map<String, Value>, NetworkKind)> = parsed
        .iter()
        .filter(|(_, _, kind)| *kind != NetworkKind::Vip)
        .collect();
    if let [(name, _, _)] = candidates.as_slice() {
        return Some(name.as_str());
    }
    candidates
        .iter()
        .find(|(name, net, _)| {
            string_list(name, net, "default").is_ok_and(|d| d.contains(&"gateway"))
        })
        .map(|(name, _, _)| name.as_str())
}

/// Which network has which NIC, both ways (one network per NIC).
#[derive(Default)]
struct Assignments {
    by_network: BTreeMap<String, String>,
    by_mac: BTreeMap<String, String>,
}

fn node_mac_set(node_uuid: &str, node_macs: &[String]) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for raw in node_macs {
        let mac = normalize_mac(raw).ok_or_else(|| {
            CpiError::cloud(format!(
                "node {node_uuid} has a port with address '{raw}', which is not a MAC address"
            ))
        })?;
        set.insert(mac);
    }
    Ok(set)
}

/// `cloud_properties.macs`, normalised; `None` when the network does not pin MACs.
fn cloud_property_macs(name: &str, net: &Map<String, Value>) -> Result<Option<Vec<String>>> {
    let Some(cp) = net.get("cloud_properties") else {
        return Ok(None);
    };
    let cp = match cp {
        Value::Null => return Ok(None),
        Value::Object(cp) => cp,
        other => {
            return Err(CpiError::cloud(format!(
                "network '{name}': cloud_properties must be an object, got {}",
                json_type(other)
            )))
        }
    };
    // A single string is accepted as a one-element list: operators write `macs: aa:bb:...`.
    let list: Vec<&Value> = match cp.get("macs") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::String(_)) => vec![one],
        Some(other) => {
            return Err(CpiError::cloud(format!(
                "network '{name}': cloud_properties.macs must be a list of MAC addresses, got {}",
                json_type(other)
            )))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(raw) = item else {
            return Err(CpiError::cloud(format!(
                "network '{name}': cloud_properties.macs must hold strings, got {}",
                json_type(item)
            )));
        };
        let mac = normalize_mac(raw).ok_or_else(|| {
            CpiError::cloud(format!(
                "network '{name}': cloud_properties.macs entry '{raw}' is not a MAC address"
            ))
        })?;
        out.push(mac);
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

/// One director network as the agent must receive it.
fn agent_network(
    name: &str,
    mut net: Map<String, Value>,
    kind: NetworkKind,
    preconfigured: bool,
) -> Result<Map<String, Value>> {
    // Go's encoding/json rejects the whole settings document on one mistyped field, so the
    // fields the agent decodes are checked here, where the network can still be named.
    for key in ["ip", "netmask", "gateway", "mac", "alias"] {
        optional_str(name, &net, key)?;
    }
    for key in ["default", "dns"] {
        string_list(name, &net, key)?;
    }
    for key in ["resolved", "use_dhcp", "preconfigured"] {
        match net.get(key) {
            None | Some(Value::Null) | Some(Value::Bool(_)) => {}
            Some(other) => {
                return Err(CpiError::cloud(format!(
                    "network '{name}': '{key}' must be true or false, got {}",
                    json_type(other)
                )))
            }
        }
    }
    if let Some(p) = net.get("prefix") {
        // The agent decodes `prefix` as a string; a number would break the whole document.
        let fixed = match p {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            other => {
                return Err(CpiError::cloud(format!(
                    "network '{name}': prefix must be a string like \"24\", got {}",
                    json_type(other)
                )))
            }
        };
        match fixed {
            Some(s) => net.insert("prefix".into(), Value::String(s)),
            None => net.remove("prefix"),
        };
    }

    match kind {
        NetworkKind::Manual => {
            reconcile_netmask_prefix(name, &mut net)?;
            net.insert("use_dhcp".into(), Value::Bool(false));
        }
        NetworkKind::Dynamic => {
            net.insert("use_dhcp".into(), Value::Bool(true));
        }
        NetworkKind::Vip => {}
    }
    if preconfigured {
        net.insert("preconfigured".into(), Value::Bool(true));
    }
    Ok(net)
}

/// A manual network needs an address and a mask; the director sends both `netmask` and
/// `prefix`, older ones only `netmask`, hand-written inputs sometimes only `prefix`.
fn reconcile_netmask_prefix(name: &str, net: &mut Map<String, Value>) -> Result<()> {
    let ip_raw = optional_str(name, net, "ip")?.unwrap_or("").to_string();
    if ip_raw.is_empty() {
        return Err(CpiError::cloud(format!(
            "manual network '{name}' has no ip: the director assigns one to every manual network"
        )));
    }
    let ip = IpAddr::from_str(&ip_raw).map_err(|_| {
        CpiError::cloud(format!(
            "manual network '{name}': ip '{ip_raw}' is not an IP address"
        ))
    })?;
    if let Some(gw) = optional_str(name, net, "gateway")? {
        if !gw.is_empty() {
            address_like(name, "gateway", gw, ip)?;
        }
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };

    let prefix = match net.get("prefix").and_then(Value::as_str) {
        None => None,
        Some(p) => match p.trim().parse::<u8>() {
            Ok(n) if n <= max => Some(n),
            _ => {
                return Err(CpiError::cloud(format!(
                "manual network '{name}': prefix '{p}' is not a prefix length between 0 and {max}"
            )))
            }
        },
    };
    let netmask = match optional_str(name, net, "netmask")? {
        None | Some("") => None,
        Some(m) => {
            let mask = address_like(name, "netmask", m, ip)?;
            let bits = ipnetwork::ip_mask_to_prefix(mask).map_err(|_| {
                CpiError::cloud(format!(
                    "manual network '{name}': netmask {m} is not a contiguous mask"
                ))
            })?;
            Some((m.to_string(), bits))
        }
    };

    let (mask_text, bits) = match (netmask, prefix) {
        (Some((m, bits)), Some(p)) if bits != p => {
            return Err(CpiError::cloud(format!(
                "manual network '{name}': netmask {m} (/{bits}) and prefix {p} disagree"
            )))
        }
        (Some((m, bits)), _) => (m, bits),
        (None, Some(p)) => {
            let mask = IpNetwork::new(ip, p)
                .map_err(|e| {
                    CpiError::cloud(format!("manual network '{name}': prefix {p}: {e}")).because(e)
                })?
                .mask();
            (mask.to_string(), p)
        }
        (None, None) => {
            return Err(CpiError::cloud(format!(
                "manual network '{name}' has neither netmask nor prefix"
            )))
        }
    };
    net.insert("netmask".into(), Value::String(mask_text));
    net.insert("prefix".into(), Value::String(bits.to_string()));
    Ok(())
}

/// Parse `text` (the network's `what`) as an address of the same family as `ip`.
fn address_like(name: &str, what: &str, text: &str, ip: IpAddr) -> Result<IpAddr> {
    let addr = IpAddr::from_str(text).map_err(|_| {
        CpiError::cloud(format!(
            "manual network '{name}': {what} '{text}' is not an IP address"
        ))
    })?;
    if addr.is_ipv4() != ip.is_ipv4() {
        return Err(CpiError::cloud(format!(
            "manual network '{name}': {what} {text} and ip {ip} are not of the same IP family"
        )));
    }
    Ok(addr)
}

fn add_unused_nics(
    agent: &mut Map<String, Value>,
    unused: &[&String],
    policy: UnusedNicPolicy,
    preconfigured: bool,
) -> Result<()> {
    if policy == UnusedNicPolicy::None {
        return Ok(());
    }
    let mut next_index = 0usize;
    for (i, mac) in unused.iter().enumerate() {
        // Predictable names, skipping any the director already uses.
        let name = loop {
            let candidate = format!("unused-nic-{next_index}");
            next_index += 1;
            if !agent.contains_key(&candidate) {
                break candidate;
            }
        };
        let mut net = Map::new();
        match policy {
            UnusedNicPolicy::Loopback => {
                let host = LOOPBACK_FIRST_HOST + i;
                if host > 254 {
                    return Err(CpiError::cloud(format!(
                        "{} unused NICs are more than the loopback placeholders can address; \
                         use unused_nic_policy dhcp or none",
                        unused.len()
                    )));
                }
                net.insert("type".into(), Value::String("manual".into()));
                net.insert("ip".into(), Value::String(format!("127.0.0.{host}")));
                net.insert("netmask".into(), Value::String(LOOPBACK_NETMASK.into()));
                net.insert("prefix".into(), Value::String(LOOPBACK_PREFIX.into()));
                net.insert("use_dhcp".into(), Value::Bool(false));
            }
            UnusedNicPolicy::Dhcp => {
                net.insert("type".into(), Value::String("dynamic".into()));
                net.insert("use_dhcp".into(), Value::Bool(true));
            }
            UnusedNicPolicy::None => unreachable!("returned above"),
        }
        net.insert("mac".into(), Value::String((*mac).clone()));
        net.insert("cloud_properties".into(), Value::Object(Map::new()));
        if preconfigured {
            net.insert("preconfigured".into(), Value::Bool(true));
        }
        agent.insert(name, Value::Object(net));
    }
    Ok(())
}

/// A string field that may be absent or null.
pub(crate) fn optional_str<'a>(
    name: &str,
    net: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>> {
    match net.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(CpiError::cloud(format!(
            "network '{name}': '{key}' must be a string, got {}",
            json_type(other)
        ))),
    }
}

/// A list of strings that may be absent or null (`dns`, `default`).
pub(crate) fn string_list<'a>(
    name: &str,
    net: &'a Map<String, Value>,
    key: &str,
) -> Result<Vec<&'a str>> {
    match net.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    CpiError::cloud(format!(
                        "network '{name}': '{key}' must be a list of strings, found {}",
                        json_type(v)
                    ))
                })
            })
            .collect(),
        Some(other) => Err(CpiError::cloud(format!(
            "network '{name}': '{key}' must be a list of strings, got {}",
            json_type(other)
        ))),
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The director's networks checked on their own, before any node is chosen: types, addresses,
/// masks, gateways and MACs. Which NIC each network takes needs the node ([`map_networks`]).
pub fn check_networks(networks: &Map<String, Value>) -> Result<()> {
    for (name, value) in networks {
        let Value::Object(net) = value else {
            return Err(CpiError::cpi(format!(
                "network '{name}': expected an object, got {}",
                json_type(value)
            )));
        };
        let kind = NetworkKind::of(name, net)?;
        if kind != NetworkKind::Vip {
            if let Some(raw) = optional_str(name, net, "mac")? {
                normalize_mac(raw).ok_or_else(|| {
                    CpiError::cloud(format!(
                        "network '{name}': mac '{raw}' is not a MAC address"
                    ))
                })?;
            }
            cloud_property_macs(name, net)?;
        }
        agent_network(name, net.clone(), kind, false)?;
    }
    Ok(())
}
