//! Choosing nodes: which nodes may take a VM, and in which order to try them.
//!
//! Ironic does the filtering it can: create_vm asks it for the free nodes only, per free
//! provision state and with the selection's `resource_class`, `conductor_group` or `owner`
//! ([`free_queries`]), or for the nodes that own the requested MACs, or for the node holding the
//! VM's disks. Whatever comes back is checked again here against every criterion ([`check`]):
//! traits and `ironic_properties` only here, and a node carrying a VM record is never free,
//! whatever Ironic's filters say. While the pages stream, only the few best candidates are kept
//! ([`Shortlist`]), so create_vm's cost in requests and memory follows the
//! free nodes, not the pool. When no node is free, one more pass over the whole pool counts the
//! reasons ([`Tally`]) without holding a node.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use serde_json::Value;

use crate::ironic::{Node, NodeQuery};
use crate::pool::record::has_vm_record;
use crate::vm_type::VmCloudProperties;

/// Provision states a free node may be in. `manageable` nodes are `provide`d after the claim.
pub const FREE_STATES: [&str; 2] = ["available", "manageable"];

/// The node fields a selection needs; lists ask for these only (`fields=`), which keeps a page of
/// 1,000 nodes small.
pub const NODE_FIELDS: [&str; 15] = [
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
    // `updated_at` is not a `fields=` field in Ironic 39 (400).
    "provision_updated_at",
];

pub const PORT_FIELDS: [&str; 4] = ["uuid", "address", "node_uuid", "pxe_enabled"];

/// What a VM asks of its node.
pub struct Criteria<'a> {
    pub props: &'a VmCloudProperties,
    /// Node field that `props.availability_zone` must equal.
    pub az_field: &'a str,
    /// The node holding the VM's persistent disks, when it has any.
    pub pinned_node: Option<&'a str>,
    /// The nodes owning any of `props.macs` (by their ports).
    pub mac_nodes: &'a BTreeSet<String>,
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
            Rejection::Reserved => "are held by a VM or a claim",
            Rejection::ProvisionState => "are neither available nor manageable",
        }
    }
}

/// Why nodes were passed over, counted over one pass of the pool (no node is kept).
#[derive(Debug, Default)]
pub struct Tally {
    pub total: usize,
    /// Nodes that passed every check.
    pub free: usize,
    pub rejected: BTreeMap<Rejection, usize>,
}

impl Tally {
    pub fn count(&mut self, node: &Node, c: &Criteria) {
        self.total += 1;
        match check(node, c) {
            Ok(()) => self.free += 1,
            Err(r) => *self.rejected.entry(r).or_insert(0) += 1,
        }
    }

    /// Nodes that match the request, free or not.
    pub fn matching(&self) -> usize {
        self.free
            + self
                .rejected
                .iter()
                .filter(|(r, _)| r.is_busy())
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    /// "0 of 12 nodes are free candidates: 7 have another resource_class, 5 are reserved".
    pub fn explain(&self) -> String {
        let mut s = format!("{} of {} nodes are free candidates", self.free, self.total);
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

/// How good a candidate is: smaller fitting size first, `available` before `manageable` (no
/// cleaning before the deploy), then a random draw so that equal nodes are shuffled and
/// concurrent calls spread out.
struct Rank {
    size: Vec<f64>,
    state: u8,
    draw: u64,
}

impl Rank {
    fn cmp(&self, other: &Rank) -> Ordering {
        compare_sizes(&self.size, &other.size)
            .then(self.state.cmp(&other.state))
            .then(self.draw.cmp(&other.draw))
    }
}

/// The best free candidates seen so far, at most `k`, best first: memory stays bounded however
/// many free nodes stream past.
pub struct Shortlist {
    k: usize,
    ranked: Vec<(Rank, Node)>,
}

impl Shortlist {
    pub fn new(k: usize) -> Shortlist {
        Shortlist {
            k: k.max(1),
            ranked: Vec::new(),
        }
    }

    /// Check `node`; keep it if it is free, matches, and ranks among the best `k` so far. A node
    /// seen twice (it changed state between two listings) counts once.
    pub fn offer(&mut self, node: Node, c: &Criteria, rng: &mut impl Rng) -> Result<(), Rejection> {
        check(&node, c)?;
        if self.ranked.iter().any(|(_, n)| n.uuid == node.uuid) {
            return Ok(());
        }
        let rank = Rank {
            size: size_key(&node, c.props),
            state: u8::from(node.provision_state.as_deref() != Some("available")),
            draw: rng.random(),
        };
        let at = self
            .ranked
            .partition_point(|(r, _)| r.cmp(&rank) != Ordering::Greater);
        if at < self.k {
            self.ranked.insert(at, (rank, node));
            self.ranked.truncate(self.k);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ranked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranked.is_empty()
    }

    /// The candidates, best first.
    pub fn into_nodes(self) -> Vec<Node> {
        self.ranked.into_iter().map(|(_, n)| n).collect()
    }
}

/// The free-node listings for a selection: one per free provision state, unassociated and out
/// of maintenance, narrowed by the selection's `resource_class` and by its availability zone
/// when the zone is a field Ironic filters on (`conductor_group`, `owner`, `resource_class`).
/// A filter newer than `microversion` is left out: [`check`] applies every criterion anyway.
pub fn free_queries(c: &Criteria, microversion: (u32, u32)) -> Vec<NodeQuery> {
    let p = c.props;
    let mut resource_class = p.resource_class.clone();
    let (mut conductor_group, mut owner) = (None, None);
    if let Some(az) = &p.availability_zone {
        match c.az_field {
            "conductor_group" => conductor_group = Some(az.clone()),
            "owner" => owner = Some(az.clone()),
            // Both named: a node must have both, so either filter will do.
            "resource_class" if resource_class.is_none() => resource_class = Some(az.clone()),
            _ => {}
        }
    }
    let since = |filter: &str, v: Option<String>| {
        v.filter(|_| NodeQuery::filter_since(filter).is_some_and(|min| microversion >= min))
    };
    let (resource_class, conductor_group, owner) = (
        since("resource_class", resource_class),
        since("conductor_group", conductor_group),
        since("owner", owner),
    );
    FREE_STATES
        .iter()
        .map(|state| NodeQuery {
            provision_state: Some(state.to_string()),
            associated: Some(false),
            maintenance: Some(false),
            resource_class: resource_class.clone(),
            conductor_group: conductor_group.clone(),
            owner: owner.clone(),
            fields: NODE_FIELDS.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// Whether `node` may take the VM, and if not, the first reason why. Ironic's filters are never
/// trusted for this: every criterion is checked on every node.
pub fn check(node: &Node, c: &Criteria) -> Result<(), Rejection> {
    let p = c.props;
    if let Some(pinned) = c.pinned_node {
        if node.uuid != pinned {
            return Err(Rejection::DiskLocality);
        }
    }
    if !p.macs.is_empty() && !c.mac_nodes.contains(&node.uuid) {
        return Err(Rejection::Macs);
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
    // A VM record means a VM owns the node, whatever instance_uuid says: undeploy clears
    // instance_uuid long before the teardown that started it has returned the node.
    if node.instance_uuid.is_some() || has_vm_record(node) {
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

    fn props(v: Value) -> VmCloudProperties {
        VmCloudProperties::parse(v.as_object().unwrap()).unwrap()
    }

    fn criteria<'a>(p: &'a VmCloudProperties, mac_nodes: &'a BTreeSet<String>) -> Criteria<'a> {
        Criteria {
            props: p,
            az_field: "conductor_group",
            pinned_node: None,
            mac_nodes,
        }
    }

    /// The shortlist of `nodes` (streamed one by one), best first.
    fn pick_k(nodes: &[Node], c: &Criteria, k: usize, seed: u64) -> Vec<String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut list = Shortlist::new(k);
        for n in nodes {
            let _ = list.offer(n.clone(), c, &mut rng);
        }
        list.into_nodes().into_iter().map(|n| n.uuid).collect()
    }

    fn pick(nodes: &[Node], p: &VmCloudProperties) -> Vec<String> {
        pick_k(nodes, &criteria(p, &BTreeSet::new()), 64, 7)
    }

    fn tally(nodes: &[Node], c: &Criteria) -> Tally {
        let mut t = Tally::default();
        for n in nodes {
            t.count(n, c);
        }
        t
    }

    #[test]
    fn best_fit_prefers_the_smallest_node_that_fits() {
        let nodes = vec![
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
        ];
        assert_eq!(
            pick(&nodes, &props(json!({"ironic_properties": {"cpus": 8}}))),
            ["medium", "big"]
        );
        assert_eq!(pick(&nodes, &props(json!({}))), ["small", "medium", "big"]);
    }

    #[test]
    fn free_means_not_in_maintenance_not_reserved_and_available_or_manageable() {
        let mut maint = node("m", "available", json!({}));
        maint.maintenance = true;
        let mut reserved = node("r", "available", json!({}));
        reserved.instance_uuid = Some("x".into());
        // Ironic's `associated=false` lets this one through: undeploy cleared its claim, and
        // its VM's teardown still holds it by the record.
        let mut recorded = node("rec", "available", json!({}));
        recorded.extra = json!({"bosh_vm": {"vm-1": {"vm_id": "vm-1"}}})
            .as_object()
            .unwrap()
            .clone();
        let mut moving = node("moving", "manageable", json!({}));
        moving.target_provision_state = Some("available".into());
        let nodes = vec![
            maint,
            reserved,
            recorded,
            moving,
            node("active", "active", json!({})),
            node("enroll", "enroll", json!({})),
            node("manageable", "manageable", json!({})),
            node("available", "available", json!({})),
        ];
        // Available first at equal size: it needs no cleaning before deploy.
        assert_eq!(pick(&nodes, &props(json!({}))), ["available", "manageable"]);
        let p = props(json!({}));
        let none = BTreeSet::new();
        let t = tally(&nodes, &criteria(&p, &none));
        assert_eq!(t.matching(), 8);
        let text = t.explain();
        assert!(
            text.contains("2 of 8")
                && text.contains("1 are in maintenance")
                && text.contains("2 are held by a VM or a claim")
                && text.contains("3 are neither available nor manageable"),
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
        let nodes = vec![a, b];
        let by_mac = props(json!({"macs": ["52:54:00:00:00:0b"]}));
        let owners: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(pick_k(&nodes, &criteria(&by_mac, &owners), 4, 1), ["b"]);
        let t = tally(&nodes, &criteria(&by_mac, &owners));
        assert_eq!(t.rejected.get(&Rejection::Macs), Some(&1));
        assert_eq!(
            pick(&nodes, &props(json!({"traits": ["CUSTOM_GPU"]}))),
            ["a"]
        );
        assert_eq!(
            pick(&nodes, &props(json!({"availability_zone": "rack2"}))),
            ["b"]
        );
        assert_eq!(
            pick(
                &nodes,
                &props(json!({"ironic_properties": {"cpu_arch": "aarch64"}}))
            ),
            ["b"]
        );
        assert!(pick(&nodes, &props(json!({"resource_class": "other"}))).is_empty());
        let p = props(json!({}));
        let none = BTreeSet::new();
        let pinned = Criteria {
            pinned_node: Some("a"),
            ..criteria(&p, &none)
        };
        assert_eq!(pick_k(&nodes, &pinned, 4, 1), ["a"]);
    }

    #[test]
    fn missing_property_means_unsuitable_not_an_error() {
        let nodes = [node("a", "available", json!({}))];
        assert!(pick(&nodes, &props(json!({"ironic_properties": {"cpus": 1}}))).is_empty());
    }

    #[test]
    fn equal_nodes_are_shuffled() {
        let nodes: Vec<Node> = (0..20)
            .map(|i| node(&format!("n{i}"), "available", json!({"cpus": 4})))
            .collect();
        let p = props(json!({}));
        let none = BTreeSet::new();
        let c = criteria(&p, &none);
        let firsts: std::collections::HashSet<String> = (0..20)
            .map(|seed| pick_k(&nodes, &c, 3, seed)[0].clone())
            .collect();
        assert!(firsts.len() > 1, "the same node came first 20 times");
    }

    #[test]
    fn the_shortlist_keeps_the_best_k_of_any_stream() {
        // 500 free nodes of ten sizes, streamed in a scrambled order, a node twice among them.
        let mut nodes: Vec<Node> = (0..500)
            .map(|i| {
                let state = if i % 3 == 0 {
                    "manageable"
                } else {
                    "available"
                };
                node(
                    &format!("n{i:03}"),
                    state,
                    json!({"memory_mb": 1024 * (1 + (i * 7919) % 10)}),
                )
            })
            .collect();
        nodes.push(nodes[42].clone());
        let p = props(json!({}));
        let none = BTreeSet::new();
        let c = criteria(&p, &none);
        let memory = |uuid: &str| {
            nodes.iter().find(|n| n.uuid == uuid).unwrap().properties["memory_mb"]
                .as_u64()
                .unwrap()
        };
        let state = |uuid: &str| {
            nodes
                .iter()
                .find(|n| n.uuid == uuid)
                .unwrap()
                .provision_state
                .clone()
                .unwrap()
        };
        let k = 64;
        let best = pick_k(&nodes, &c, k, 3);
        assert_eq!(best.len(), k);
        let unique: BTreeSet<&String> = best.iter().collect();
        assert_eq!(unique.len(), k, "a node was kept twice");
        // Exactly the smallest: 50 nodes have 1 GiB, so the 64 are those 50 and 14 of 2 GiB,
        // in order, available before manageable within a size.
        let small = nodes
            .iter()
            .filter(|n| n.properties["memory_mb"] == json!(1024))
            .count();
        assert_eq!(small, 50);
        assert!(best[..50].iter().all(|u| memory(u) == 1024));
        assert!(best[50..].iter().all(|u| memory(u) == 2048));
        for size in [&best[..50], &best[50..]] {
            let states: Vec<String> = size.iter().map(|u| state(u)).collect();
            let first_manageable = states.iter().position(|s| s == "manageable");
            if let Some(at) = first_manageable {
                assert!(states[at..].iter().all(|s| s == "manageable"), "{states:?}");
            }
        }
        // Reversing the stream keeps the same set of sizes and states.
        let mut reversed = nodes.clone();
        reversed.reverse();
        let again = pick_k(&reversed, &c, k, 3);
        let profile = |list: &[String]| -> Vec<(u64, String)> {
            list.iter().map(|u| (memory(u), state(u))).collect()
        };
        assert_eq!(profile(&again)[..50], profile(&best)[..50]);
    }

    #[test]
    fn free_queries_let_ironic_filter_what_it_can() {
        let none = BTreeSet::new();
        let p = props(
            json!({"resource_class": "gold", "availability_zone": "rack-1",
                             "traits": ["CUSTOM_GPU"], "ironic_properties": {"cpus": 8}}),
        );
        let c = criteria(&p, &none);
        let qs = free_queries(&c, (1, 115));
        let params: Vec<Vec<(&str, String)>> = qs.iter().map(|q| q.params()).collect();
        let want = |state: &str| {
            vec![
                ("provision_state", state.to_string()),
                ("associated", "false".to_string()),
                ("maintenance", "false".to_string()),
                ("resource_class", "gold".to_string()),
                ("conductor_group", "rack-1".to_string()),
            ]
        };
        assert_eq!(params, [want("available"), want("manageable")]);
        assert!(qs.iter().all(|q| q.fields.len() == NODE_FIELDS.len()));

        // The zone as the owner; a zone Ironic cannot filter on stays in memory.
        let owner = Criteria {
            az_field: "owner",
            ..criteria(&p, &none)
        };
        assert_eq!(
            free_queries(&owner, (1, 115))[0].owner.as_deref(),
            Some("rack-1")
        );
        let extra = Criteria {
            az_field: "extra.zone",
            ..criteria(&p, &none)
        };
        let q = &free_queries(&extra, (1, 115))[0];
        assert_eq!((q.conductor_group.as_ref(), q.owner.as_ref()), (None, None));
        let zone_as_class = props(json!({"availability_zone": "silver"}));
        let rc = Criteria {
            az_field: "resource_class",
            ..criteria(&zone_as_class, &none)
        };
        assert_eq!(
            free_queries(&rc, (1, 115))[0].resource_class.as_deref(),
            Some("silver")
        );

        // An Ironic too old for a filter gets the query without it.
        let old = free_queries(&c, (1, 45));
        assert_eq!(old[0].resource_class.as_deref(), Some("gold"));
        assert_eq!(old[0].conductor_group, None);
        let older = free_queries(&owner, (1, 20));
        assert_eq!(
            (older[0].resource_class.as_ref(), older[0].owner.as_ref()),
            (None, None)
        );
        assert_eq!(free_queries(&owner, (1, 49))[0].owner, None);
    }

    #[test]
    fn what_ironic_could_not_filter_is_checked_in_memory() {
        // What an old Ironic answers to the unfiltered query: every free node of every class
        // and zone. The shortlist is what the filters would have given.
        let mut gold = node("gold", "available", json!({}));
        gold.resource_class = Some("gold".into());
        gold.conductor_group = Some("rack-1".into());
        let mut other_zone = gold.clone();
        other_zone.uuid = "other-zone".into();
        other_zone.conductor_group = Some("rack-2".into());
        let plain = node("plain", "available", json!({}));
        let p = props(json!({"resource_class": "gold", "availability_zone": "rack-1"}));
        assert_eq!(pick(&[plain, other_zone, gold], &p), ["gold"]);
    }
}
