//! `get_disks`: the disks attached to a VM.

use serde_json::Value;

use crate::error::Result;
use crate::ironic::Ironic;
use crate::pool::record::disks;
use crate::pool::vm::held;
use crate::protocol::methods::GetDisks;
use crate::services::Lazy;

pub fn run(ironic: &Lazy<dyn Ironic>, args: GetDisks) -> Result<Vec<String>> {
    let (node, record) = held(ironic.get()?, args.vm_cid.as_str())?;
    let mut attached: Vec<String> = disks(&node)
        .into_iter()
        .filter(|(_, r)| r.get("attached_to").and_then(Value::as_str) == Some(&record.vm_id))
        .map(|(cid, _)| cid)
        .collect();
    attached.sort();
    Ok(attached)
}
