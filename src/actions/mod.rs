//! One module per CPI method (or per small family of methods that answer alike).

pub mod attach_disk;
pub mod calculate_vm_cloud_properties;
pub mod configure_networks;
pub mod create_disk;
pub mod create_stemcell;
pub mod create_vm;
pub mod current_vm_id;
pub mod delete_disk;
pub mod delete_snapshot;
pub mod delete_stemcell;
pub mod delete_vm;
pub mod detach_disk;
pub mod get_disks;
pub mod has_disk;
pub mod has_vm;
pub mod info;
pub mod networks;
pub mod ping;
pub mod reboot_vm;
pub mod resize_disk;
pub mod set_disk_metadata;
pub mod set_vm_metadata;
pub mod snapshot_disk;
pub mod update_disk;
