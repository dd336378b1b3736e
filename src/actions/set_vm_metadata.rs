//! `set_vm_metadata`: keep the director's metadata in the node's `extra`, and name the node after
//! the instance so that `baremetal node list` reads like `bosh vms`. Never fails over the name.

use serde_json::{json, Map, Value};

use crate::error::{self, Result, Stage};
use crate::ironic::{Ironic, PatchOp};
use crate::pool::record::while_owned;
use crate::pool::record::METADATA_KEY;
use crate::pool::vm::held;
use crate::protocol::methods::SetVmMetadata;
use crate::services::{Lazy, Notes};

pub fn run(ironic: &Lazy<dyn Ironic>, notes: &Notes, args: SetVmMetadata) -> Result<()> {
    let vm_cid = args.vm_cid.as_str();
    let metadata = args.metadata.clone();
    let client = ironic.get()?;
    let (node, record) = held(client, vm_cid)?;
    // Ironic refuses the write if the VM's record is gone by then (another VM may own the node).
    let guard = while_owned(&record.vm_id);
    let meta_op = PatchOp::add(
        format!("/extra/{METADATA_KEY}"),
        Value::Object(metadata.clone()),
    );

    if let Some(name) = node_name(&metadata).filter(|n| node.name.as_deref() != Some(n)) {
        match client.patch_node(
            &node.uuid,
            &[
                guard.clone(),
                meta_op.clone(),
                PatchOp::add("/name", json!(name)),
            ],
        ) {
            Ok(_) => {
                notes.note(format!("node {} is now named {name}", node.uuid));
                return Ok(());
            }
            // Taken or refused: the metadata matters, the name does not.
            Err(e) => notes.note(format!("kept the node's name ({name} is not usable: {e})")),
        }
    }
    client
        .patch_node(&node.uuid, &[guard, meta_op])
        .map_err(|e| {
            error::from_ironic(
                e,
                Stage::Call,
                &format!("saving metadata on node {}", node.label()),
            )
        })?;
    Ok(())
}

/// `<instance_group>-<index>` (or `<job>-<index>`), reduced to the characters Ironic accepts in
/// names (RFC 3986 unreserved). Compilation VMs and others without those keys get no name.
fn node_name(metadata: &Map<String, Value>) -> Option<String> {
    let text = |k: &str| {
        metadata
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let group = text("instance_group").or_else(|| text("job"))?;
    let index = match metadata.get("index") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return None,
    };
    let name: String = format!("{group}-{index}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    // A UUID-shaped name would be taken for a UUID by the API.
    (uuid::Uuid::parse_str(&name).is_err() && name.len() <= 255).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_metadata() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            node_name(&m(json!({"instance_group": "router", "index": "0"}))).as_deref(),
            Some("router-0")
        );
        assert_eq!(
            node_name(&m(json!({"job": "my job/x", "index": 2}))).as_deref(),
            Some("my-job-x-2")
        );
        assert_eq!(node_name(&m(json!({"compiling": "golang"}))), None);
        assert_eq!(node_name(&m(json!({"instance_group": "db"}))), None);
    }
}
