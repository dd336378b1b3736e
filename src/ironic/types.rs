//! Ironic's resources as this CPI reads them. Every field defaults, so that `fields=` lists that
//! leave some out still decode.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Node {
    pub uuid: String,
    pub name: Option<String>,
    pub driver: Option<String>,
    pub provision_state: Option<String>,
    pub target_provision_state: Option<String>,
    pub power_state: Option<String>,
    pub target_power_state: Option<String>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub fault: Option<String>,
    pub last_error: Option<String>,
    pub instance_uuid: Option<String>,
    pub resource_class: Option<String>,
    pub conductor_group: Option<String>,
    pub owner: Option<String>,
    /// A list of strings at microversion >= 1.37 (`fields=traits`).
    pub traits: Vec<String>,
    pub properties: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub instance_info: Map<String, Value>,
    pub driver_info: Map<String, Value>,
    pub reservation: Option<String>,
    /// When the provision state last changed (ISO 8601, UTC), as Ironic records it.
    pub provision_updated_at: Option<String>,
    /// When the node record last changed.
    pub updated_at: Option<String>,
}

impl Node {
    /// `name (uuid)` or the uuid, for messages a person reads.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => format!("{n} ({})", self.uuid),
            _ => self.uuid.clone(),
        }
    }

    pub fn state(&self) -> &str {
        self.provision_state.as_deref().unwrap_or("unknown")
    }

    /// Whether a provision state transition is running. Ironic keeps `target_provision_state`
    /// on the failure states (`deploy failed` -> active, `clean failed` -> manageable or
    /// available): those have settled, and only a new action moves them.
    pub fn in_transition(&self) -> bool {
        self.target_provision_state.is_some() && !FAILED_STATES.contains(&self.state())
    }
}

/// Ironic's failure states, which keep the target of the transition that failed.
pub const FAILED_STATES: [&str; 8] = [
    "deploy failed",
    "clean failed",
    "error",
    "rescue failed",
    "unrescue failed",
    "inspect failed",
    "adopt failed",
    "service failed",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Port {
    pub uuid: String,
    /// MAC address as Ironic stores it (lower case, colon separated).
    pub address: String,
    pub node_uuid: String,
    pub pxe_enabled: Option<bool>,
    pub extra: Map<String, Value>,
}

/// One JSON Patch operation (RFC 6902) as Ironic's PATCH endpoints take them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOp {
    /// `add` replaces an existing member too, so one op covers both cases.
    pub fn add(path: impl Into<String>, value: Value) -> Self {
        PatchOp {
            op: "add".into(),
            path: path.into(),
            value: Some(value),
        }
    }

    pub fn remove(path: impl Into<String>) -> Self {
        PatchOp {
            op: "remove".into(),
            path: path.into(),
            value: None,
        }
    }
}

/// Escape one key for a JSON Pointer path (`~` and `/` are special).
pub fn pointer_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
