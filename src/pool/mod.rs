//! The node pool: which node takes a VM, how it is claimed and returned, and the bookkeeping
//! that records it on the node.

pub mod claim;
pub mod cloud_properties;
pub mod enroll;
pub mod inventory;
pub mod record;
pub mod select;
pub mod teardown;
pub mod view;
