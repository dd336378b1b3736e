//! `calculate_vm_cloud_properties`: cloud_properties that select a node at least this big.

use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::protocol::methods::CalculateVmCloudProperties;

pub fn run(args: CalculateVmCloudProperties) -> Result<Map<String, Value>> {
    let size = args.desired_instance_size.0;
    // Ironic's local_gb is whole GiB; round up so the node is never smaller than asked.
    let local_gb = size.ephemeral_disk_size.div_ceil(1024);
    let mut properties = Map::new();
    properties.insert(
        "ironic_properties".into(),
        json!({
            "cpus": size.cpu,
            "memory_mb": size.ram,
            "local_gb": local_gb,
        }),
    );
    Ok(properties)
}
