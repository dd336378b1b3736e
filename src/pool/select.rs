//! Choosing nodes: which nodes of the pool may take a VM, and in which order to try them.
//!
//! Works on one snapshot of the pool (one node list and one port list joined in memory), so the
//! cost is two paginated requests whatever the pool size, and no request per node.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use serde_json::Value;

use crate::ironic::{Node, Port};
use crate::mac::normalize_mac;
use crate::pool::cloud_properties::VmCloudProperties;

/// Provision states a free node may be in. `manageable` nodes are `provide`d after the claim.
pub const FREE_STATES: [&str; 2] = ["available", "manageable"];

/// The node fields a selection needs; lists ask for these only (`fields=`), which keeps a page of
/// 1,000 nodes small.
pub const NODE_FIELDS: [&str; 14] = [
    "uuid",
    "name",
    "provision_state",
    "target_provision_state",
    "power_state",
    "maintenance",
    "instance_uuid",
    "resource_class",
    "conductor_group",
    "owner",
    "traits",
    "properties",
    "extra",
    "driver",
];

pub const PORT_FIELDS: [&str; 4] = ["uuid", "address", "node_uuid", "pxe_enabled"];

/// The pool at one moment: nodes and the MACs of their ports.
pub struct PoolSnapshot {
    pub nodes: Vec<Node>,
    macs_by_node: HashMap<String, Vec<String>>,
    /// The MACs of ports with `pxe_enabled`: the NICs a node boots from.
    pxe_macs_by_node: HashMap<String, Vec<String>>,
    node_by_mac: HashMap<String, String>,
}

impl PoolSnapshot {
    pub fn new(nodes: Vec<Node>, ports: Vec<Port>) -> Self {
        let mut macs_by_node: HashMap<String, Vec<String>> = HashMap::new();
        let mut pxe_macs_by_node: HashMap<String, Vec<String>> = HashMap::new();
        let mut node_by_mac = HashMap::new();
        for port in ports {
            let mac = normalize_mac(&port.address).unwrap_or(port.address);
            node_by_mac.insert(mac.clone(), port.node_uuid.clone());
            if port.pxe_enabled == Some(true) {
                pxe_macs_by_node
                    .entry(port.node_uuid.clone())
                    .or_default()
                    .push(mac.clone());
            }
            macs_by_node.entry(port.node_uuid).or_default().push(mac);
        }
        for macs in macs_by_node
            .values_mut()
            .chain(pxe_macs_by_node.values_mut())
        {
            macs.sort();
        }
        PoolSnapshot {
            nodes,
            macs_by_node,
            pxe_macs_by_node,
            node_by_mac,
        }
    }

    /// Add a node this call created (enrolled), with its port MACs, without listing the pool again.
    pub fn add(&mut self, node: Node, macs: &[String]) {
        let mut normalized: Vec<String> = macs
            .iter()
            .map(|m| normalize_mac(m).unwrap_or_else(|| m.clone()))
            .collect();
        normalized.sort();
        for mac in &normalized {
            self.node_by_mac.insert(mac.clone(), node.uuid.clone());
        }
        self.macs_by_node.insert(node.uuid.clone(), normalized);
        self.nodes.push(node);
    }

    pub fn macs_of(&self, node_uuid: &str) -> &[String] {
        self.macs_by_node
            .get(node_uuid)
            .map_or(&[][..], Vec::as_slice)
    }

    /// The node's MACs that Ironic boots from (`pxe_enabled` ports); empty when unknown.
    pub fn pxe_macs_of(&self, node_uuid: &str) -> &[String] {
        self.pxe_macs_by_node
            .get(node_uuid)
            .map_or(&[][..], Vec::as_slice)
    }

    pub fn node_with_mac(&self, mac: &str) -> Option<&Node> {
        let mac = normalize_mac(mac)?;
        let uuid = self.node_by_mac.get(&mac)?;
        self.nodes.iter().find(|n| &n.uuid == uuid)
    }
}

/// What a VM asks of its node.
pub struct Criteria<'a> {
    pub props: &'a VmCloudProperties,
    /// Node field that `props.availability_zone` must equal.
    pub az_field: &'a str,
    /// The node holding the VM's persistent disks, when it has any.
    pub pinned_node: Option<&'a str>,
}

/// Why a node was passed over; the first failing check counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    DiskLocality,
    Macs,
    ResourceClass,
    Traits,
    AvailabilityZone,
    Properties,
    // Matching, but busy:
    Maintenance,
    Reserved,
    ProvisionState,
}

impl Rejection {
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            Rejection::Maintenance | Rejection::Reserved | Rejection::ProvisionState
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Rejection::DiskLocality => "do not hold the VM's persistent disks",
            Rejection::Macs => "own none of cloud_properties.macs",
            Rejection::ResourceClass => "have another resource_class",
            Rejection::Traits => "lack a required trait",
            Rejection::AvailabilityZone => "are in another availability zone",
            Rejection::Properties => "are too small or differ in ironic_properties",
            Rejection::Maintenance => "are in maintenance",
            Rejection::Reserved => "are reserved (instance_uuid set)",
            Rejection::ProvisionState => "are neither available nor manageable",
        }
    }
}

pub struct Selection<'a> {
    /// Free matching nodes, best fit first, equal ones shuffled.
    pub candidates: Vec<&'a Node>,
    pub rejected: BTreeMap<Rejection, usize>,
    pub total: usize,
}

impl Selection<'_> {
    /// Nodes that match the request, free or not.
    pub fn matching(&self) -> usize {
        self.candidates.len()
            + self
                .rejected
                .iter()
                .filter(|(r, _)| r.is_busy())
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    /// "0 of 12 nodes are free candidates: 7 have another resource_class, 5 are reserved".
    pub fn explain(&self) -> String {
        let mut s = format!(
            "{} of {} nodes are free candidates",
            self.candidates.len(),
            self.total
        );
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{n} {}", r.describe()))
            .collect();
        if !reasons.is_empty() {
            s.push_str(": ");
            s.push_str(&reasons.join(", "));
        }
        s
    }
}

pub fn select<'a>(pool: &'a PoolSnapshot, c: &Criteria, rng: &mut impl Rng) -> Selection<'a> {
    let mut rejected = BTreeMap::new();
    let mut ranked: Vec<(Vec<f64>, u8, u64, &Node)> = Vec::new();
    for node in &pool.nodes {
        match check(pool, node, c) {
            Err(r) => *rejected.entry(r).or_insert(0) += 1,
            Ok(()) => {
                let state_rank = u8::from(node.provision_state.as_deref() != Some("available"));
                ranked.push((size_key(node, c.props), state_rank, rng.random(), node));
            }
        }
    }
    ranked.sort_by(|a, b| {
        compare_sizes(&a.0, &b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    Selection {
        candidates: ranked.into_iter().map(|(_, _, _, n)| n).collect(),
        rejected,
        total: pool.nodes.len(),
    }
}

fn check(pool: &PoolSnapshot, node: &Node, c: &Criteria) -> Result<(), Rejection> {
    let p = c.props;
    if let Some(pinned) = c.pinned_node {
        if node.uuid != pinned {
            return Err(Rejection::DiskLocality);
        }
    }
    if !p.macs.is_empty() {
        let macs = pool.macs_of(&node.uuid);
        if !p.macs.iter().any(|m| macs.contains(m)) {
            return Err(Rejection::Macs);
        }
    }
    if let Some(rc) = &p.resource_class {
        if node.resource_class.as_deref() != Some(rc.as_str()) {
            return Err(Rejection::ResourceClass);
        }
    }
    if !p.traits.iter().all(|t| node.traits.contains(t)) {
        return Err(Rejection::Traits);
    }
    if let Some(az) = &p.availability_zone {
        if node_field(node, c.az_field).as_deref() != Some(az.as_str()) {
            return Err(Rejection::AvailabilityZone);
        }
    }
    if !p
        .ironic_properties
        .iter()
        .all(|(k, want)| property_fits(node.properties.get(k), want))
    {
        return Err(Rejection::Properties);
    }
    if node.maintenance {
        return Err(Rejection::Maintenance);
    }
    if node.instance_uuid.is_some() || node.allocation_uuid.is_some() {
        return Err(Rejection::Reserved);
    }
    let free_state = node
        .provision_state
        .as_deref()
        .is_some_and(|s| FREE_STATES.contains(&s));
    if !free_state || node.target_provision_state.is_some() {
        return Err(Rejection::ProvisionState);
    }
    Ok(())
}

/// The value of `conductor_group`, `owner`, `resource_class`, `properties.<k>` or `extra.<k>`.
pub fn node_field(node: &Node, field: &str) -> Option<String> {
    let as_string = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    match field.split_once('.') {
        Some(("properties", k)) => node.properties.get(k).and_then(as_string),
        Some(("extra", k)) => node.extra.get(k).and_then(as_string),
        _ => match field {
            "conductor_group" => node.conductor_group.clone(),
            "owner" => node.owner.clone(),
            "resource_class" => node.resource_class.clone(),
            "name" => node.name.clone(),
            _ => None,
        },
    }
}

/// Node properties are often strings ("8") even where they mean numbers.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn property_fits(have: Option<&Value>, want: &Value) -> bool {
    let Some(have) = have else {
        return false;
    };
    match want {
        Value::Number(_) => match (as_number(have), as_number(want)) {
            (Some(h), Some(w)) => h >= w,
            _ => false,
        },
        Value::Bool(w) => match have {
            Value::Bool(h) => h == w,
            Value::String(s) => s.eq_ignore_ascii_case(&w.to_string()),
            _ => false,
        },
        Value::String(w) => match have {
            Value::String(h) => h == w,
            other => other.to_string().as_str() == w.as_str(),
        },
        _ => false,
    }
}

/// Smallest fitting node first: the requested numeric properties, then memory, cpus and disk.
/// Unknown sizes sort last, so that nodes nobody described are not used up first.
fn size_key(node: &Node, p: &VmCloudProperties) -> Vec<f64> {
    let mut keys: Vec<&str> = p
        .ironic_properties
        .iter()
        .filter(|(_, v)| v.is_number())
        .map(|(k, _)| k.as_str())
        .collect();
    for k in ["memory_mb", "cpus", "local_gb"] {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.iter()
        .map(|k| {
            node.properties
                .get(*k)
                .and_then(as_number)
                .unwrap_or(f64::INFINITY)
        })
        .collect()
}

fn compare_sizes(a: &[f64], b: &[f64]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    fn node(uuid: &str, state: &str, props: Value) -> Node {
        Node {
            uuid: uuid.into(),
            provision_state: Some(state.into()),
            resource_class: Some("bm".into()),
            properties: props.as_object().unwrap().clone(),
            ..Default::default()
        }
    }

    fn port(node: &str, mac: &str) -> Port {
        Port {
            uuid: format!("p-{mac}"),
            address: mac.into(),
            node_uuid: node.into(),
            ..Default::default()
        }
    }

    fn props(v: Value) -> VmCloudProperties {
        VmCloudProperties::parse(v.as_object().unwrap()).unwrap()
    }

    fn pick(pool: &PoolSnapshot, p: &VmCloudProperties) -> Vec<String> {
        let c = Criteria {
            props: p,
            az_field: "conductor_group",
            pinned_node: None,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        select(pool, &c, &mut rng)
            .candidates
            .iter()
            .map(|n| n.uuid.clone())
            .collect()
    }

    #[test]
    fn best_fit_prefers_the_smallest_node_that_fits() {
        let pool = PoolSnapshot::new(
            vec![
                node("big", "available", json!({"cpus": 64, "memory_mb": 524288})),
                node(
                    "small",
                    "available",
                    json!({"cpus": "4", "memory_mb": "8192"}),
                ),
                node(
                    "medium",
                    "available",
                    json!({"cpus": 16, "memory_mb": 65536}),
                ),
            ],
            vec![],
        );
        assert_eq!(
            pick(&pool, &props(json!({"ironic_properties": {"cpus": 8}}))),
            ["medium", "big"]
        );
        assert_eq!(pick(&pool, &props(json!({}))), ["small", "medium", "big"]);
    }

    #[test]
    fn free_means_not_in_maintenance_not_reserved_and_available_or_manageable() {
        let mut maint = node("m", "available", json!({}));
        maint.maintenance = true;
        let mut reserved = node("r", "available", json!({}));
        reserved.instance_uuid = Some("x".into());
        let pool = PoolSnapshot::new(
            vec![
                maint,
                reserved,
                node("active", "active", json!({})),
                node("enroll", "enroll", json!({})),
                node("manageable", "manageable", json!({})),
                node("available", "available", json!({})),
            ],
            vec![],
        );
        // Available first at equal size: it needs no cleaning before deploy.
        assert_eq!(pick(&pool, &props(json!({}))), ["available", "manageable"]);
        let c = Criteria {
            props: &props(json!({})),
            az_field: "conductor_group",
            pinned_node: None,
        };
        let s = select(&pool, &c, &mut rand::rng());
        assert_eq!(s.matching(), 6);
        let text = s.explain();
        assert!(
            text.contains("2 of 6") && text.contains("1 are in maintenance"),
            "{text}"
        );
    }

    #[test]
    fn macs_traits_zone_and_strings_select() {
        let mut a = node("a", "available", json!({"cpu_arch": "x86_64"}));
        a.traits = vec!["CUSTOM_RAID1".into(), "CUSTOM_GPU".into()];
        a.conductor_group = Some("rack1".into());
        let mut b = node("b", "available", json!({"cpu_arch": "aarch64"}));
        b.conductor_group = Some("rack2".into());
        let pool = PoolSnapshot::new(
            vec![a, b],
            vec![
                port("a", "52:54:00:00:00:0A"),
                port("b", "52:54:00:00:00:0b"),
            ],
        );
        assert_eq!(
            pick(&pool, &props(json!({"macs": ["52:54:00:00:00:0b"]}))),
            ["b"]
        );
        assert_eq!(
            pick(&pool, &props(json!({"macs": ["52:54:00:00:00:0a"]}))),
            ["a"]
        );
        assert_eq!(
            pick(&pool, &props(json!({"traits": ["CUSTOM_GPU"]}))),
            ["a"]
        );
        assert_eq!(
            pick(&pool, &props(json!({"availability_zone": "rack2"}))),
            ["b"]
        );
        assert_eq!(
            pick(
                &pool,
                &props(json!({"ironic_properties": {"cpu_arch": "aarch64"}}))
            ),
            ["b"]
        );
        assert!(pick(&pool, &props(json!({"resource_class": "other"}))).is_empty());
        assert_eq!(pool.node_with_mac("52-54-00-00-00-0A").unwrap().uuid, "a");
    }

    #[test]
    fn missing_property_means_unsuitable_not_an_error() {
        let pool = PoolSnapshot::new(vec![node("a", "available", json!({}))], vec![]);
        assert!(pick(&pool, &props(json!({"ironic_properties": {"cpus": 1}}))).is_empty());
    }

    #[test]
    fn equal_nodes_are_shuffled() {
        let nodes: Vec<Node> = (0..20)
            .map(|i| node(&format!("n{i}"), "available", json!({"cpus": 4})))
            .collect();
        let pool = PoolSnapshot::new(nodes, vec![]);
        let c = Criteria {
            props: &props(json!({})),
            az_field: "conductor_group",
            pinned_node: None,
        };
        let firsts: std::collections::HashSet<String> = (0..20)
            .map(|_| {
                select(&pool, &c, &mut rand::rng()).candidates[0]
                    .uuid
                    .clone()
            })
            .collect();
        assert!(firsts.len() > 1, "the same node came first 20 times");
    }
}
