//! Disk records in the node's `extra.bosh_disks`, keyed by disk cid:
//! `{"size_mb": 51200, "device": "/dev/sdc", "created_at": "...", "attached": false, "metadata": {}}`.
//! They stay on the node when its VM is deleted: the disk is still there.

use serde_json::{json, Map, Value};

use crate::disks::cid::DiskCid;
use crate::error::{CpiError, Result};
use crate::ironic::types::pointer_key;
use crate::ironic::{IronicClient, Node, PatchOp, PortQuery};
use crate::pool::record::{disks, DISKS_KEY};

/// A disk and the node it lives on.
pub struct Located {
    pub node: Node,
    pub cid: DiskCid,
    pub record: Option<Map<String, Value>>,
}

impl Located {
    pub fn cid_text(&self) -> String {
        self.cid.to_string()
    }

    /// The record, or the DiskNotFound the director expects.
    pub fn require(&self) -> Result<&Map<String, Value>> {
        self.record.as_ref().ok_or_else(|| {
            CpiError::disk_not_found(format!(
                "disk {} not found on node {} (it has no record in extra.{DISKS_KEY})",
                self.cid,
                self.node.label()
            ))
        })
    }

    pub fn attached(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.get("attached") == Some(&Value::Bool(true)))
    }
}

/// Find the node that owns the disk's MAC; None when no node has that MAC any more.
pub fn locate(client: &IronicClient, cid: &DiskCid) -> Result<Option<Located>> {
    let ports = client
        .list_ports(&PortQuery {
            address: Some(cid.mac.clone()),
            fields: vec!["node_uuid".into(), "address".into()],
            ..Default::default()
        })
        .map_err(|e| CpiError::cloud(format!("looking up the node of disk {cid}: {e}")))?;
    let Some(port) = ports.first() else {
        return Ok(None);
    };
    let node = match client.get_node(&port.node_uuid) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => {
            return Err(CpiError::cloud(format!(
                "reading the node of disk {cid}: {e}"
            )))
        }
    };
    let record = disks(&node)
        .get(&cid.to_string())
        .and_then(Value::as_object)
        .cloned();
    Ok(Some(Located {
        node,
        cid: cid.clone(),
        record,
    }))
}

/// Locate a disk the director names, or DiskNotFound.
pub fn locate_existing(client: &IronicClient, cid_text: &str) -> Result<Located> {
    let cid = DiskCid::parse_or_not_found(cid_text)?;
    let located = locate(client, &cid)?.ok_or_else(|| {
        CpiError::disk_not_found(format!(
            "disk {cid_text} not found: no node has a port with MAC {}",
            cid.mac
        ))
    })?;
    located.require()?;
    Ok(located)
}

/// The node of VM `vm_cid` and where disk `disk_cid` lives, for attach and detach.
pub fn locate_for_vm(
    client: &IronicClient,
    vm_cid: &str,
    disk_cid: &str,
) -> Result<(Node, Located)> {
    let (node, _) = crate::vm::held_node(client, vm_cid)?;
    let located = locate_existing(client, disk_cid)?;
    Ok((node, located))
}

/// Write one record; only that key changes, so records of other disks are left as they are.
pub fn put(
    client: &IronicClient,
    node: &Node,
    cid: &str,
    record: Map<String, Value>,
) -> Result<()> {
    let op = if node.extra.get(DISKS_KEY).is_some_and(Value::is_object) {
        PatchOp::add(
            format!("/extra/{DISKS_KEY}/{}", pointer_key(cid)),
            Value::Object(record),
        )
    } else {
        PatchOp::add(format!("/extra/{DISKS_KEY}"), json!({ cid: record }))
    };
    client
        .patch_node(&node.uuid, &[op])
        .map(drop)
        .map_err(|e| CpiError::cloud(format!("saving disk {cid} on node {}: {e}", node.label())))
}

pub fn remove(client: &IronicClient, node: &Node, cid: &str) -> Result<()> {
    let records = disks(node);
    // The last disk takes the key with it: the node ends as it was before any disk.
    let op = if records.len() == 1 && records.contains_key(cid) {
        PatchOp::remove(format!("/extra/{DISKS_KEY}"))
    } else {
        PatchOp::remove(format!("/extra/{DISKS_KEY}/{}", pointer_key(cid)))
    };
    client.patch_node(&node.uuid, &[op]).map(drop).map_err(|e| {
        CpiError::cloud(format!(
            "removing disk {cid} from node {}: {e}",
            node.label()
        ))
    })
}

/// Set `attached` on a located disk's record.
pub fn set_attached(client: &IronicClient, located: &Located, attached: bool) -> Result<()> {
    let mut record = located.require()?.clone();
    record.insert("attached".into(), json!(attached));
    put(client, &located.node, &located.cid_text(), record)
}
