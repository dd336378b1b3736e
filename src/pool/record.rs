//! What this CPI writes on a node, in its `extra`: undeploy wipes `instance_info` and
//! `instance_uuid`, so whatever must outlive a deploy (who owns the node, where it came from,
//! who enrolled it, persistent disks) lives in `extra`.
//!
//! The VM record (`extra.bosh_vm`) is the ownership of the node: a node that carries one is
//! never free, whatever its `instance_uuid` says, and it goes only as the last step of a
//! teardown. It is keyed by the VM's id (`{"bosh_vm": {"<vm id>": {...}}}`) so that every write
//! made for a VM can be conditional on that VM still owning the node: a JSON Patch into
//! `/extra/bosh_vm/<vm id>/...` fails, and Ironic refuses the whole request, once the record
//! is gone. docs/ownership.md tells the whole protocol.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ironic::types::pointer_key;
use crate::ironic::{Node, PatchOp};
use crate::pool::vm_cid::VmCid;
use crate::pool::whoami::Process;

/// `extra.bosh_vm`: the VM this CPI put on the node (keyed by its id), from claim to the end of
/// its teardown.
pub const VM_KEY: &str = "bosh_vm";
/// `extra.bosh_enrolled_by_cpi`: the node was enrolled by create_vm (`ironic_params`) and is
/// removed again by delete_vm.
pub const ENROLLED_KEY: &str = "bosh_enrolled_by_cpi";
/// `extra.bosh_metadata`: the director's set_vm_metadata.
pub const METADATA_KEY: &str = "bosh_metadata";
/// `extra.bosh_disks`: persistent disk records, by disk cid. They stay when the VM goes.
pub const DISKS_KEY: &str = "bosh_disks";

/// instance_info keys create_vm sets; released nodes lose them again.
pub const INSTANCE_INFO_KEYS: [&str; 7] = [
    "image_source",
    "image_os_hash_algo",
    "image_os_hash_value",
    "image_disk_format",
    "root_device",
    "capabilities",
    "bosh_agent_id",
];

/// Where a VM is in its life on the node.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// create_vm holds the node and prepares it (provide, config drive).
    Claimed,
    /// create_vm set `instance_info` and deploys: validate, deploy, wait for `active`.
    Deploying,
    /// create_vm answered the director: the VM exists.
    Active,
    /// delete_vm (or create_vm's rollback, or `ironic_cpi free`) is returning the node.
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Claimed => "claimed",
            Phase::Deploying => "deploying",
            Phase::Active => "active",
            Phase::Deleting => "deleting",
        }
    }
}

/// A teardown in progress: who runs it, and (once undeploy has cleared the VM's own claim) the
/// token it holds the node's `instance_uuid` with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TeardownMark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub by: Process,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmRecord {
    /// This VM's generation on the node: the second half of its cid, and the `instance_uuid`
    /// create_vm claimed the node with.
    pub vm_id: String,
    pub agent_id: String,
    pub phase: Phase,
    /// `available` or `manageable`: where the teardown returns the node to.
    pub origin_state: String,
    /// The node's name before set_vm_metadata renamed it, restored on release.
    #[serde(default)]
    pub origin_name: Option<String>,
    pub claimed_at: String,
    /// When the record last changed (a phase, a teardown step): progress, for stale claims.
    pub updated_at: String,
    pub claimed_by: Process,
    #[serde(default)]
    pub stemcell: Option<String>,
    /// Manual cleaning when the VM is deleted, as its vm_type's `clean_on_delete` said at create
    /// time; unset: the config's `ironic.clean_on_delete` when it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_on_delete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<TeardownMark>,
    pub cpi: String,
}

impl VmRecord {
    pub fn new(
        vm_id: &str,
        agent_id: &str,
        node: &Node,
        claimed_by: Process,
        clean_on_delete: Option<bool>,
    ) -> VmRecord {
        let now = timestamp(SystemTime::now());
        VmRecord {
            vm_id: vm_id.to_string(),
            agent_id: agent_id.to_string(),
            phase: Phase::Claimed,
            origin_state: node.state().to_string(),
            origin_name: node.name.clone(),
            claimed_at: now.clone(),
            updated_at: now,
            claimed_by,
            stemcell: None,
            clean_on_delete,
            teardown: None,
            cpi: concat!("ironic_cpi/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    pub fn to_value(&self) -> Value {
        // A struct of strings, numbers and booleans always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `extra.bosh_vm` holding this record.
    pub fn container(&self) -> Value {
        let mut m = Map::new();
        m.insert(self.vm_id.clone(), self.to_value());
        Value::Object(m)
    }

    /// The record on a node, if it has one this CPI can read.
    pub fn read(node: &Node) -> Option<VmRecord> {
        let entries = node.extra.get(VM_KEY)?.as_object()?;
        let (id, record) = entries.iter().next().filter(|_| entries.len() == 1)?;
        let record: VmRecord = serde_json::from_value(record.clone()).ok()?;
        (&record.vm_id == id).then_some(record)
    }

    /// The cid of this VM on `node`.
    pub fn cid(&self, node_uuid: &str) -> VmCid {
        VmCid {
            node: node_uuid.to_string(),
            vm_id: self.vm_id.clone(),
        }
    }

    /// The same record in `phase`, stamped now.
    pub fn in_phase(&self, phase: Phase) -> VmRecord {
        VmRecord {
            phase,
            updated_at: timestamp(SystemTime::now()),
            ..self.clone()
        }
    }
}

/// The JSON Pointer of VM `vm_id`'s record.
pub fn record_path(vm_id: &str) -> String {
    format!("/extra/{VM_KEY}/{}", pointer_key(vm_id))
}

/// A patch operation that makes a request conditional on VM `vm_id` still owning the node:
/// it stamps the record's `updated_at`, and fails (the whole request with it) when the record is
/// gone. Put it first in every request made on a VM's behalf.
pub fn while_owned(vm_id: &str) -> PatchOp {
    PatchOp::add(
        format!("{}/updated_at", record_path(vm_id)),
        Value::String(timestamp(SystemTime::now())),
    )
}

/// A node carries a VM record (readable or not): it belongs to a VM and is never free.
pub fn has_vm_record(node: &Node) -> bool {
    node.extra.contains_key(VM_KEY)
}

pub fn enrolled_by_cpi(node: &Node) -> bool {
    node.extra.get(ENROLLED_KEY) == Some(&Value::Bool(true))
}

pub fn disks(node: &Node) -> Map<String, Value> {
    node.extra
        .get(DISKS_KEY)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// RFC 3339 in UTC, to the second, as records store times.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time as records and Ironic write it (`2026-11-30T01:02:03Z`,
/// `2026-11-30T01:02:03.123456+00:00`).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let utc = s
        .strip_suffix("+00:00")
        .map(|t| format!("{t}Z"))
        .unwrap_or_else(|| s.to_string());
    humantime::parse_rfc3339_weak(&utc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_round_trips_through_extra() {
        let node = Node {
            uuid: "n".into(),
            name: Some("rack1-7".into()),
            provision_state: Some("manageable".into()),
            ..Default::default()
        };
        let record = VmRecord::new("v", "agent-1", &node, Process::current(None), Some(true));
        assert_eq!(record.origin_state, "manageable");
        assert_eq!(record.origin_name.as_deref(), Some("rack1-7"));
        let mut with = node.clone();
        with.extra.insert(VM_KEY.into(), record.container());
        assert_eq!(VmRecord::read(&with), Some(record.clone()));
        assert!(has_vm_record(&with));
        assert_eq!(record.to_value()["phase"], json!("claimed"));
        assert_eq!(record.in_phase(Phase::Deleting).phase, Phase::Deleting);
        assert_eq!(record_path("a/b"), "/extra/bosh_vm/a~1b");

        // An unreadable record still marks the node as taken.
        let mut garbled = node;
        garbled.extra.insert(VM_KEY.into(), json!("???"));
        assert!(VmRecord::read(&garbled).is_none() && has_vm_record(&garbled));
    }

    #[test]
    fn times_from_records_and_from_ironic_parse() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(parse_time(&timestamp(t)), Some(t));
        assert!(parse_time("2026-11-30T01:02:03.123456+00:00").is_some());
        assert!(parse_time("2026-11-30T01:02:03+00:00").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
