//! The state of a simulated Ironic: nodes, ports, and the conductor's pending work.
//!
//! The rules are Ironic 39's where the CPI depends on them (read from its source, see
//! docs/ownership.md): a new `instance_uuid` on a node that has another is refused (409
//! NodeAssociated), the same value again is accepted, removing it always is; a PATCH during a
//! transition is refused (409) unless the state allows updates; provision actions follow the
//! state machine (409 InvalidState otherwise); undeploy clears `instance_uuid` and
//! `instance_info` when the tear-down ends, before cleaning. Each request is atomic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use ironic_cpi::ironic::error::ConflictKind;
use ironic_cpi::ironic::{IronicError, Node, NodeQuery, PatchOp, Port, PortQuery};

/// What the conductor does next for a node in transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `deploying` ends in `active` (or `deploy failed` when the node is set to fail).
    Deploy,
    /// `deleting`: the tear-down ends, instance fields are cleared, cleaning starts.
    TearDown,
    /// `cleaning` ends in this state.
    Clean(String),
}

/// A change a simulated process made, for "a stale cid never changes a node".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub actor: usize,
    pub node: String,
    /// The request: `PATCH /instance_uuid /extra/bosh_vm`, `provision deleted`, ...
    pub what: String,
    /// The vm id of the node's VM record before and after the change (None: no record).
    pub record_before: Option<String>,
    pub record_after: Option<String>,
}

impl Mutation {
    /// A PATCH that touches nothing but `instance_uuid` (a claim, or letting one go).
    pub fn only_claim(&self) -> bool {
        self.what == "PATCH /instance_uuid"
    }
}

#[derive(Debug)]
pub struct State {
    /// The API microversion the simulated Ironic serves (filters newer than it are not
    /// applied by Ironic, and the CPI must apply them itself).
    pub microversion: (u32, u32),
    pub nodes: BTreeMap<String, Node>,
    pub ports: Vec<Port>,
    pub pending: BTreeMap<String, Step>,
    /// Nodes whose next deploy fails (`deploy failed`, with a `last_error`).
    pub failing_deploys: BTreeSet<String>,
    pub mutations: Vec<Mutation>,
    pub requests: u64,
    /// Every request: `<process> <request> -> <outcome>`, to read a failing schedule.
    pub journal: Vec<String>,
}

impl Default for State {
    fn default() -> State {
        State {
            microversion: (1, 115),
            nodes: BTreeMap::new(),
            ports: Vec::new(),
            pending: BTreeMap::new(),
            failing_deploys: BTreeSet::new(),
            mutations: Vec::new(),
            requests: 0,
            journal: Vec::new(),
        }
    }
}

const UPDATE_ALLOWED_STATES: [&str; 3] = ["deploy failed", "clean failed", "error"];
const DELETE_ALLOWED_STATES: [&str; 4] = ["manageable", "enroll", "available", "adopt failed"];

fn conflict(kind: ConflictKind, message: String) -> IronicError {
    IronicError::Conflict { kind, message }
}

fn not_found(id: &str) -> IronicError {
    IronicError::NotFound {
        resource: "node".into(),
        id: id.into(),
        message: format!("Node {id} could not be found."),
    }
}

impl State {
    /// A node by UUID or name.
    pub fn find(&self, id: &str) -> Option<&Node> {
        self.nodes
            .get(id)
            .or_else(|| self.nodes.values().find(|n| n.name.as_deref() == Some(id)))
    }

    fn uuid_of(&self, id: &str) -> Result<String, IronicError> {
        self.find(id)
            .map(|n| n.uuid.clone())
            .ok_or_else(|| not_found(id))
    }

    pub fn add_node(&mut self, node: Node, macs: &[&str]) {
        for (i, mac) in macs.iter().enumerate() {
            self.ports.push(Port {
                uuid: format!("{}-port-{i}", node.uuid),
                address: mac.to_string(),
                node_uuid: node.uuid.clone(),
                pxe_enabled: Some(i == 0),
                ..Default::default()
            });
        }
        self.nodes.insert(node.uuid.clone(), node);
    }

    pub fn list_nodes(&self, q: &NodeQuery) -> Vec<Node> {
        self.nodes
            .values()
            .filter(|n| {
                q.provision_state
                    .as_deref()
                    .is_none_or(|s| n.provision_state.as_deref() == Some(s))
                    && q.associated.is_none_or(|a| n.instance_uuid.is_some() == a)
                    && q.maintenance.is_none_or(|m| n.maintenance == m)
                    && q.resource_class
                        .as_deref()
                        .is_none_or(|r| n.resource_class.as_deref() == Some(r))
                    && q.conductor_group
                        .as_deref()
                        .is_none_or(|g| n.conductor_group.as_deref() == Some(g))
                    && q.owner
                        .as_deref()
                        .is_none_or(|o| n.owner.as_deref() == Some(o))
                    && q.instance_uuid
                        .as_deref()
                        .is_none_or(|u| n.instance_uuid.as_deref() == Some(u))
            })
            .take(q.limit_total.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn list_ports(&self, q: &PortQuery) -> Vec<Port> {
        self.ports
            .iter()
            .filter(|p| {
                q.address
                    .as_deref()
                    .is_none_or(|a| p.address.eq_ignore_ascii_case(a))
                    && q.node_uuid.as_deref().is_none_or(|n| {
                        p.node_uuid == n
                            || self.find(n).is_some_and(|node| node.uuid == p.node_uuid)
                    })
            })
            .cloned()
            .collect()
    }

    pub fn patch(&mut self, id: &str, ops: &[PatchOp]) -> Result<Node, IronicError> {
        let uuid = self.uuid_of(id)?;
        let node = &self.nodes[&uuid];
        let only_removes_claim =
            ops.len() == 1 && ops[0].op == "remove" && ops[0].path == "/instance_uuid";
        if !(node.maintenance && only_removes_claim)
            && node.target_provision_state.is_some()
            && !UPDATE_ALLOWED_STATES.contains(&node.state())
        {
            return Err(conflict(
                ConflictKind::Other,
                format!("Node {id} can not be updated while a state transition is in progress."),
            ));
        }
        let mut doc = json!({
            "name": node.name,
            "instance_uuid": node.instance_uuid,
            "instance_info": node.instance_info,
            "extra": node.extra,
            "properties": node.properties,
        });
        for op in ops {
            apply(&mut doc, op)?;
        }
        let new_uuid = doc["instance_uuid"].as_str().map(str::to_string);
        if new_uuid.is_some() && new_uuid != node.instance_uuid {
            if let Some(held) = &node.instance_uuid {
                return Err(conflict(
                    ConflictKind::Associated,
                    format!("Node {uuid} is associated with instance {held}."),
                ));
            }
        }
        let new_name = doc["name"].as_str().map(str::to_string);
        if let Some(name) = &new_name {
            if self
                .nodes
                .values()
                .any(|n| n.uuid != uuid && n.name.as_deref() == Some(name))
            {
                return Err(conflict(
                    ConflictKind::Other,
                    format!("A node with name {name} already exists."),
                ));
            }
        }
        let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
        let node = self.nodes.get_mut(&uuid).ok_or_else(|| not_found(id))?;
        node.name = new_name;
        node.instance_uuid = new_uuid;
        node.instance_info = obj(&doc["instance_info"]);
        node.extra = obj(&doc["extra"]);
        node.properties = obj(&doc["properties"]);
        node.updated_at = Some(now_text());
        Ok(node.clone())
    }

    pub fn provision(
        &mut self,
        id: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<(), IronicError> {
        let uuid = self.uuid_of(id)?;
        let node = self.nodes.get_mut(&uuid).ok_or_else(|| not_found(id))?;
        let state = node.state().to_string();
        let invalid = || {
            conflict(
                ConflictKind::InvalidState,
                format!(
                    "The requested action \"{target}\" can not be performed on node \"{uuid}\" \
                     while it is in state \"{state}\"."
                ),
            )
        };
        if node.in_transition() {
            return Err(invalid());
        }
        let (next, heading, step) = match (target, state.as_str()) {
            ("manage", "enroll" | "available" | "clean failed" | "manageable") => {
                if state == "manageable" {
                    return Err(invalid());
                }
                ("manageable", None, None)
            }
            ("provide", "manageable") => (
                "cleaning",
                Some("available"),
                Some(Step::Clean("available".into())),
            ),
            ("active", "available") => ("deploying", Some("active"), Some(Step::Deploy)),
            ("deleted", "active" | "deploy failed" | "error" | "wait call-back") => {
                ("deleting", Some("available"), Some(Step::TearDown))
            }
            ("clean", "manageable") => {
                if body.and_then(|b| b.get("clean_steps")).is_none() {
                    return Err(IronicError::BadRequest {
                        message: "clean_steps is required".into(),
                    });
                }
                (
                    "cleaning",
                    Some("manageable"),
                    Some(Step::Clean("manageable".into())),
                )
            }
            _ => return Err(invalid()),
        };
        node.provision_state = Some(next.into());
        node.target_provision_state = heading.map(str::to_string);
        node.provision_updated_at = Some(now_text());
        if target == "active" {
            let drive = body.and_then(|b| b.get("configdrive")).cloned();
            node.instance_info
                .insert("configdrive".into(), drive.unwrap_or(Value::Null));
        }
        match step {
            Some(s) => {
                self.pending.insert(uuid, s);
            }
            None => {
                self.pending.remove(&uuid);
            }
        }
        Ok(())
    }

    /// The conductor's next step for `uuid`.
    pub fn fire(&mut self, uuid: &str) {
        let Some(step) = self.pending.remove(uuid) else {
            return;
        };
        let failing = self.failing_deploys.remove(uuid) && step == Step::Deploy;
        let Some(node) = self.nodes.get_mut(uuid) else {
            return;
        };
        node.provision_updated_at = Some(now_text());
        match step {
            Step::Deploy if failing => {
                // Ironic keeps the target on failure states.
                node.provision_state = Some("deploy failed".into());
                node.target_provision_state = Some("active".into());
                node.last_error = Some("model: the deploy failed".into());
            }
            Step::Deploy => {
                node.provision_state = Some("active".into());
                node.target_provision_state = None;
                node.power_state = Some("power on".into());
            }
            Step::TearDown => {
                node.instance_uuid = None;
                node.instance_info = Map::new();
                node.power_state = Some("power off".into());
                node.provision_state = Some("cleaning".into());
                self.pending
                    .insert(uuid.to_string(), Step::Clean("available".into()));
            }
            Step::Clean(target) => {
                node.provision_state = Some(target);
                node.target_provision_state = None;
            }
        }
    }

    pub fn delete_node(&mut self, id: &str) -> Result<(), IronicError> {
        let uuid = self.uuid_of(id)?;
        let node = &self.nodes[&uuid];
        if let Some(i) = &node.instance_uuid {
            return Err(conflict(
                ConflictKind::Associated,
                format!("Node {uuid} is associated with instance {i}."),
            ));
        }
        if !DELETE_ALLOWED_STATES.contains(&node.state()) && !node.maintenance {
            return Err(conflict(
                ConflictKind::InvalidState,
                format!(
                    "Can not delete node {uuid} while it is in state {}",
                    node.state()
                ),
            ));
        }
        self.nodes.remove(&uuid);
        self.ports.retain(|p| p.node_uuid != uuid);
        self.pending.remove(&uuid);
        Ok(())
    }
}

fn now_text() -> String {
    ironic_cpi::pool::record::timestamp(SystemTime::now())
}

/// RFC 6901 pointer segments, unescaped.
fn segments(path: &str) -> Result<Vec<String>, IronicError> {
    let bad = || IronicError::BadRequest {
        message: format!("invalid patch path {path}"),
    };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// `add` (which replaces) and `remove`, as Ironic's jsonpatch applies them.
fn apply(doc: &mut Value, op: &PatchOp) -> Result<(), IronicError> {
    let segs = segments(&op.path)?;
    let (last, parents) = segs.split_last().ok_or_else(|| IronicError::BadRequest {
        message: "empty patch path".into(),
    })?;
    let mut at = &mut *doc;
    for s in parents {
        at = at.get_mut(s).ok_or_else(|| IronicError::BadRequest {
            message: format!("can't replace a non-existent object '{s}'"),
        })?;
    }
    let obj = at.as_object_mut().ok_or_else(|| IronicError::BadRequest {
        message: format!("{} is not an object", op.path),
    })?;
    match op.op.as_str() {
        "add" | "replace" => {
            obj.insert(last.clone(), op.value.clone().unwrap_or(Value::Null));
        }
        "remove" => {
            // Top-level fields exist in Ironic's document even when null; members of maps must.
            if parents.is_empty() {
                obj.insert(last.clone(), Value::Null);
            } else if obj.remove(last).is_none() {
                return Err(IronicError::BadRequest {
                    message: format!("can't remove a non-existent object '{last}'"),
                });
            }
        }
        other => {
            return Err(IronicError::BadRequest {
                message: format!("unsupported patch op {other}"),
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> State {
        let mut s = State::default();
        s.add_node(
            Node {
                uuid: "n1".into(),
                provision_state: Some("available".into()),
                ..Default::default()
            },
            &["52:54:00:00:00:01"],
        );
        s
    }

    #[test]
    fn instance_uuid_is_a_compare_and_set() {
        let mut s = world();
        s.patch("n1", &[PatchOp::add("/instance_uuid", json!("a"))])
            .unwrap();
        s.patch("n1", &[PatchOp::add("/instance_uuid", json!("a"))])
            .unwrap();
        let e = s
            .patch(
                "n1",
                &[
                    PatchOp::add("/instance_uuid", json!("b")),
                    PatchOp::add("/extra/x", json!(1)),
                ],
            )
            .unwrap_err();
        assert!(e.is_final_conflict(), "{e}");
        assert!(
            s.nodes["n1"].extra.is_empty(),
            "a refused patch changes nothing"
        );
        s.patch("n1", &[PatchOp::remove("/instance_uuid")]).unwrap();
        s.patch("n1", &[PatchOp::add("/instance_uuid", json!("b"))])
            .unwrap();
        assert!(s.patch("n1", &[PatchOp::remove("/extra/none")]).is_err());
    }

    #[test]
    fn undeploy_clears_the_claim_before_cleaning_and_patches_wait() {
        let mut s = world();
        s.patch("n1", &[PatchOp::add("/instance_uuid", json!("a"))])
            .unwrap();
        s.provision("n1", "active", None).unwrap();
        assert!(s
            .patch("n1", &[PatchOp::add("/extra/x", json!(1))])
            .is_err());
        s.fire("n1");
        assert_eq!(s.nodes["n1"].state(), "active");
        s.provision("n1", "deleted", None).unwrap();
        assert_eq!(s.nodes["n1"].instance_uuid.as_deref(), Some("a"));
        s.fire("n1");
        assert_eq!(s.nodes["n1"].instance_uuid, None);
        assert_eq!(s.nodes["n1"].state(), "cleaning");
        s.fire("n1");
        assert_eq!(s.nodes["n1"].state(), "available");
        assert!(s.provision("n1", "deleted", None).is_err());
    }
}
