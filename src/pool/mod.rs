//! The node pool: which node takes a VM, how it is claimed, and the bookkeeping that records it.

pub mod cloud_properties;
pub mod mac;
pub mod select;
