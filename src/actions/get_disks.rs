//! `get_disks`: the disks attached to a VM.

use serde_json::{json, Value};

use crate::call::Call;
use crate::error::Result;
use crate::pool::record::disks;
use crate::rpc::Args;
use crate::vm::held_node;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let (node, _) = held_node(call.ironic()?, args.string(0)?)?;
    let mut attached: Vec<String> = disks(&node)
        .into_iter()
        .filter(|(_, r)| r.get("attached") == Some(&Value::Bool(true)))
        .map(|(cid, _)| cid)
        .collect();
    attached.sort();
    Ok(json!(attached))
}
