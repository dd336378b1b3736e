//! Where a VM with persistent disks must go: the disks are local disks of a node, so they pin
//! the VM to that node (create_vm's `disk_cids`).

use crate::disks::cid::DiskCid;
use crate::disks::store;
use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::{Ironic, Node};

/// The node holding all of `disk_cids`, or None when there are none. Each disk must be
/// recorded on the node its cid names (by a MAC of that node), and all on the same node.
/// Nothing is claimed yet, so Ironic's failures are create_vm's before-claim kind.
pub fn node_of(api: &dyn Ironic, disk_cids: &[String]) -> Result<Option<Node>> {
    let mut pinned: Option<Node> = None;
    for text in disk_cids {
        let cid = DiskCid::parse(text).ok_or_else(|| {
            CpiError::cloud(format!("disk_cids: '{text}' is not a disk id of this CPI"))
        })?;
        let located = store::find(api, &cid)
            .map_err(|e| {
                error::from_ironic(
                    e,
                    Stage::BeforeClaim,
                    &format!("looking up the node of disk {text}"),
                )
            })?
            .ok_or_else(|| {
                CpiError::cloud(format!(
                    "disk {text} lives on the node with MAC {}, which is not in the pool any more",
                    cid.mac
                ))
            })?;
        if pinned.as_ref().is_some_and(|n| n.uuid != located.node.uuid) {
            return Err(CpiError::cloud(format!(
                "disk_cids {disk_cids:?} live on different nodes; one VM can only use the \
                 local disks of its own node"
            )));
        }
        if located.record.is_none() {
            return Err(CpiError::cloud(format!(
                "disk {text} is not recorded on node {} (the node with MAC {}): it was never \
                 created there, or it was deleted",
                located.node.label(),
                cid.mac
            )));
        }
        pinned = Some(located.node);
    }
    Ok(pinned)
}
