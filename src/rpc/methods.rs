//! Every CPI method's arguments, in the order, with the names and the JSON types the contract
//! gives them (`docs` of the director: `cpi_api_calls`; `spec/<method>.json` holds examples).
//! Each struct is the one definition: the dispatch table's argument list (`SPEC`), the check
//! run before any action, and the value the action receives all come from it.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::args::{Arg, Args, FromArg, Typed};
use crate::error::Result;

/// One struct per method: `SPEC` lists the arguments for the dispatch table and the error
/// messages; `decode` reads them in order (errors name the method, position and argument).
macro_rules! arguments {
    ($($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? })*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name { $(pub $field: $ty),* }

        impl $name {
            pub const SPEC: &'static [Arg] =
                &[$(Arg::new(stringify!($field), <$ty as FromArg>::TYPE)),*];

            #[allow(unused_variables, unused_mut, unused_assignments)]
            pub fn decode(args: &Args) -> Result<Self> {
                let mut i = 0;
                Ok($name {$($field: {
                    let v = <$ty as FromArg>::from_arg(args, i)?;
                    i += 1;
                    v
                }),*})
            }
        }
    )*};
}

arguments! {
    /// `info`, `ping`, `current_vm_id`.
    NoArgs {}
    CreateStemcell { image_path: String, cloud_properties: Map<String, Value> }
    DeleteStemcell { stemcell_cid: String }
    CreateVm {
        agent_id: String,
        stemcell_cid: String,
        cloud_properties: Map<String, Value>,
        networks: Map<String, Value>,
        disk_cids: Vec<String>,
        env: Map<String, Value>,
    }
    DeleteVm { vm_cid: String }
    HasVm { vm_cid: String }
    RebootVm { vm_cid: String }
    SetVmMetadata { vm_cid: String, metadata: Map<String, Value> }
    CalculateVmCloudProperties { desired_instance_size: Typed<DesiredInstanceSize> }
    CreateDisk { size: u64, cloud_properties: Map<String, Value>, vm_cid: Option<String> }
    DeleteDisk { disk_cid: String }
    HasDisk { disk_cid: String }
    AttachDisk { vm_cid: String, disk_cid: String }
    DetachDisk { vm_cid: String, disk_cid: String }
    SetDiskMetadata { disk_cid: String, metadata: Map<String, Value> }
    GetDisks { vm_cid: String }
    ResizeDisk { disk_cid: String, new_size: u64 }
    UpdateDisk { disk_cid: String, new_size: u64, cloud_properties: Map<String, Value> }
    SnapshotDisk { disk_cid: String, metadata: Map<String, Value> }
    DeleteSnapshot { snapshot_cid: String }
    CreateNetwork { network_definition: Map<String, Value> }
    DeleteNetwork { network_cid: String }
    ConfigureNetworks { vm_cid: String, networks: Map<String, Value> }
}

/// `calculate_vm_cloud_properties`'s argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredInstanceSize {
    pub cpu: u64,
    /// MiB
    pub ram: u64,
    /// MiB
    pub ephemeral_disk_size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_in_order_and_names_the_argument() {
        let values = vec![json!("vm-1"), json!(null)];
        let a = Args::new("set_vm_metadata", SetVmMetadata::SPEC, &values);
        let d = SetVmMetadata::decode(&a).unwrap();
        assert_eq!(d.vm_cid, "vm-1");
        assert!(d.metadata.is_empty(), "null is an empty object");

        let values = vec![json!(1024), json!({}), json!(5)];
        let a = Args::new("create_disk", CreateDisk::SPEC, &values);
        let e = CreateDisk::decode(&a).unwrap_err();
        assert!(e.message.contains("argument 3 'vm_cid'"), "{}", e.message);

        let values = vec![json!({"cpu": 2, "ram": "x", "ephemeral_disk_size": 1})];
        let a = Args::new(
            "calculate_vm_cloud_properties",
            CalculateVmCloudProperties::SPEC,
            &values,
        );
        let e = CalculateVmCloudProperties::decode(&a).unwrap_err();
        assert!(
            e.message.contains("'desired_instance_size' at 'ram'"),
            "{}",
            e.message
        );
        assert_eq!(CreateVm::SPEC.len(), 6);
        assert_eq!(CreateVm::SPEC[4].name, "disk_cids");
    }
}
