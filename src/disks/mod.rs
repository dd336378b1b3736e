//! Persistent disks: local disks of nodes, recorded in the node's `extra`.

pub mod cid;
pub mod placement;
pub mod registry;
pub mod store;
