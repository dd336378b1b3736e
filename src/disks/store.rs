//! Disk records in the node's `extra.bosh_disks`, keyed by disk cid:
//! `{"size_mb": 51200, "device": "/dev/sdc", "created_at": "...", "metadata": {}}`, plus
//! `"attached_to": "<vm id>"` while a VM has it: the VM, not the node, so that a disk attached to
//! a VM long gone is never counted as attached to the VM that holds the node now. Records stay on
//! the node when its VM is deleted: the disk is still there.

use serde_json::{json, Map, Value};

use crate::disks::cid::DiskCid;
use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::types::pointer_key;
use crate::ironic::{Ironic, IronicError, Node, PatchOp, PortQuery};
use crate::pool::record::{disks, DISKS_KEY};
use crate::pool::record::{while_owned, VmRecord};

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

    /// The VM the disk is attached to, if any.
    pub fn attached_to(&self) -> Option<&str> {
        self.record
            .as_ref()
            .and_then(|r| r.get("attached_to"))
            .and_then(Value::as_str)
    }
}

/// Find the node that owns the disk's MAC; None when no node has that MAC any more.
pub fn locate(client: &dyn Ironic, cid: &DiskCid) -> Result<Option<Located>> {
    find(client, cid).map_err(|e| {
        error::from_ironic(
            e,
            Stage::Call,
            &format!("looking up the node of disk {cid}"),
        )
    })
}

/// [`locate`] with Ironic's own error, for callers that map it by their stage (create_vm).
pub fn find(
    client: &dyn Ironic,
    cid: &DiskCid,
) -> std::result::Result<Option<Located>, IronicError> {
    let ports = client.list_ports(&PortQuery {
        address: Some(cid.mac.clone()),
        fields: vec!["node_uuid".into(), "address".into()],
        ..Default::default()
    })?;
    let Some(port) = ports.first() else {
        return Ok(None);
    };
    let node = match client.get_node(&port.node_uuid) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
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
pub fn locate_existing(client: &dyn Ironic, cid_text: &str) -> Result<Located> {
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

/// The node and record of VM `vm_cid` and where disk `disk_cid` lives, for attach and detach.
pub fn locate_for_vm(
    client: &dyn Ironic,
    vm_cid: &str,
    disk_cid: &str,
) -> Result<(Node, VmRecord, Located)> {
    let (node, record) = crate::pool::vm::held(client, vm_cid)?;
    let located = locate_existing(client, disk_cid)?;
    Ok((node, record, located))
}

/// Write one record; only that key changes, so records of other disks are left as they are.
/// `vm_claim`: the VM the write is for; Ironic refuses the write once the VM's record is gone.
pub fn put(
    client: &dyn Ironic,
    node: &Node,
    vm_claim: Option<&str>,
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
    let mut ops = Vec::new();
    if let Some(vm_id) = vm_claim {
        ops.push(while_owned(vm_id));
    }
    ops.push(op);
    client.patch_node(&node.uuid, &ops).map(drop).map_err(|e| {
        error::from_ironic(
            e,
            Stage::Call,
            &format!("saving disk {cid} on node {}", node.label()),
        )
    })
}

pub fn remove(client: &dyn Ironic, node: &Node, cid: &str) -> Result<()> {
    let records = disks(node);
    // The last disk takes the key with it: the node ends as it was before any disk.
    let op = if records.len() == 1 && records.contains_key(cid) {
        PatchOp::remove(format!("/extra/{DISKS_KEY}"))
    } else {
        PatchOp::remove(format!("/extra/{DISKS_KEY}/{}", pointer_key(cid)))
    };
    client.patch_node(&node.uuid, &[op]).map(drop).map_err(|e| {
        error::from_ironic(
            e,
            Stage::Call,
            &format!("removing disk {cid} from node {}", node.label()),
        )
    })
}

/// Attach a located disk to VM `vm_id` (`Some`) or detach it (`None`).
pub fn set_attached(client: &dyn Ironic, located: &Located, vm_id: Option<&str>) -> Result<()> {
    let mut record = located.require()?.clone();
    match vm_id {
        Some(id) => record.insert("attached_to".into(), json!(id)),
        None => record.remove("attached_to"),
    };
    put(client, &located.node, vm_id, &located.cid_text(), record)
}
