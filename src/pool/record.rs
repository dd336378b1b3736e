//! What this CPI writes on a node, in its `extra`: undeploy wipes `instance_info` and
//! `instance_uuid`, so whatever must outlive a deploy (where the node came from, who enrolled it,
//! persistent disks) lives in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ironic::Node;

/// `extra.bosh_vm`: the VM this CPI put on the node, present from claim to release.
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmRecord {
    /// The claim: equal to the node's `instance_uuid` while this CPI holds the node.
    pub instance_uuid: String,
    pub agent_id: String,
    /// `available` or `manageable`: where delete_vm returns the node to.
    pub origin_state: String,
    /// The node's name before set_vm_metadata renamed it, restored on release.
    #[serde(default)]
    pub origin_name: Option<String>,
    pub claimed_at: String,
    #[serde(default)]
    pub stemcell: Option<String>,
    pub cpi: String,
}

impl VmRecord {
    pub fn new(agent_id: &str, node: &Node) -> VmRecord {
        VmRecord {
            instance_uuid: uuid::Uuid::new_v4().to_string(),
            agent_id: agent_id.to_string(),
            origin_state: node.state().to_string(),
            origin_name: node.name.clone(),
            claimed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            stemcell: None,
            cpi: concat!("ironic_cpi/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("record serialises")
    }

    /// The record on a node, whether or not the claim is still held.
    pub fn read(node: &Node) -> Option<VmRecord> {
        serde_json::from_value(node.extra.get(VM_KEY)?.clone()).ok()
    }

    /// The record, only while its claim is the node's current `instance_uuid`: a node released
    /// and taken by someone else is not ours, whatever stale keys it still carries.
    pub fn held(node: &Node) -> Option<VmRecord> {
        let record = VmRecord::read(node)?;
        (node.instance_uuid.as_deref() == Some(record.instance_uuid.as_str())).then_some(record)
    }
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
