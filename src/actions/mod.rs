//! One module per CPI method (or per small family of methods that answer alike).

pub mod configure_networks;
pub mod current_vm_id;
pub mod delete_snapshot;
pub mod info;
pub mod networks;
pub mod not_built;
pub mod ping;
pub mod resize_disk;
pub mod snapshot_disk;
pub mod update_disk;
