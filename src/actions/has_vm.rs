//! `has_vm`: true only while the node holds a VM this CPI deployed; false when it is gone.

use serde_json::{json, Value};

use crate::call::Call;
use crate::error::{CpiError, Result};
use crate::pool::record::VmRecord;
use crate::rpc::Args;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let vm_cid = args.string(0)?;
    match call.ironic()?.get_node(vm_cid) {
        Ok(node) => Ok(json!(VmRecord::held(&node).is_some())),
        Err(e) if e.is_not_found() => Ok(json!(false)),
        Err(e) => Err(CpiError::cloud(format!("reading node {vm_cid}: {e}"))),
    }
}
