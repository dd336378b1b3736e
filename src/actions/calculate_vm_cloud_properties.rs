//! `calculate_vm_cloud_properties`: cloud_properties that select a node at least this big.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::call::Call;
use crate::error::Result;
use crate::rpc::Args;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredSize {
    cpu: u64,
    /// MiB
    ram: u64,
    /// MiB
    ephemeral_disk_size: u64,
}

pub fn run(_call: &Call, args: &Args) -> Result<Value> {
    let size: DesiredSize = args.typed(0)?;
    // Ironic's local_gb is whole GiB; round up so the node is never smaller than asked.
    let local_gb = size.ephemeral_disk_size.div_ceil(1024);
    Ok(json!({
        "ironic_properties": {
            "cpus": size.cpu,
            "memory_mb": size.ram,
            "local_gb": local_gb,
        }
    }))
}
