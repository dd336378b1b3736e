//! Finding the VM a cid names. Every method that takes a vm cid goes through here, so that a
//! cid of a VM that is gone (its node since released, maybe holding another VM) never reaches
//! an Ironic call that changes something.

use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::{Ironic, IronicError, Node};
use crate::pool::record::VmRecord;
use crate::pool::vm_cid::VmCid;

/// What a node says about a cid.
pub enum Lookup {
    /// The node holds this VM.
    Held(Box<Node>, Box<VmRecord>),
    /// The VM is gone: no such node, or the node holds another VM or none. Why, for the log.
    Gone(String),
}

/// Read the node a cid names and compare its record with the cid.
pub fn lookup(api: &dyn Ironic, cid: &VmCid) -> std::result::Result<Lookup, IronicError> {
    let node = match api.get_node(&cid.node) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => {
            return Ok(Lookup::Gone(format!("node {} does not exist", cid.node)))
        }
        Err(e) => return Err(e),
    };
    Ok(match VmRecord::read(&node) {
        Some(record) if record.vm_id == cid.vm_id => Lookup::Held(Box::new(node), Box::new(record)),
        Some(record) => Lookup::Gone(format!(
            "node {} now holds another VM ({})",
            node.label(),
            record.vm_id
        )),
        None => Lookup::Gone(format!(
            "node {} holds no VM of this CPI (state {})",
            node.label(),
            node.state()
        )),
    })
}

/// A cid the director sent, parsed; a malformed one is a clear, final error.
pub fn parse_cid(text: &str) -> Result<VmCid> {
    VmCid::parse(text).map_err(CpiError::cloud)
}

/// The node and record of a VM that must exist: `VMNotFound` for a VM that is gone.
pub fn held(api: &dyn Ironic, cid_text: &str) -> Result<(Node, VmRecord)> {
    let cid = parse_cid(cid_text)?;
    match lookup(api, &cid) {
        Ok(Lookup::Held(node, record)) => Ok((*node, *record)),
        Ok(Lookup::Gone(why)) => Err(CpiError::vm_not_found(format!("VM {cid} not found: {why}"))),
        Err(e) => Err(error::from_ironic(
            e,
            Stage::Call,
            &format!("reading the node of VM {cid}"),
        )),
    }
}
