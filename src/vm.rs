//! Finding the node of a VM the director names.

use crate::error::{CpiError, Result};
use crate::ironic::{IronicClient, Node};
use crate::pool::record::VmRecord;

/// The node of `vm_cid`, if it still holds a VM of this CPI; VMNotFound otherwise.
pub fn held_node(client: &IronicClient, vm_cid: &str) -> Result<(Node, VmRecord)> {
    let node = match client.get_node(vm_cid) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => {
            return Err(CpiError::vm_not_found(format!(
                "VM {vm_cid} not found: no such node"
            )))
        }
        Err(e) => return Err(CpiError::cloud(format!("reading node {vm_cid}: {e}"))),
    };
    match VmRecord::held(&node) {
        Some(record) => Ok((node, record)),
        None => Err(CpiError::vm_not_found(format!(
            "VM {vm_cid} not found: node {} holds no VM of this CPI (state {})",
            node.label(),
            node.state()
        ))),
    }
}
