//! The node pool: which node takes a VM, how it is claimed and returned, and the bookkeeping
//! that records it on the node.

pub mod confirm;
pub mod enroll;
pub mod orphans;
pub mod provision;
pub mod record;
pub mod reserve;
pub mod select;
pub mod teardown;
pub mod view;
pub mod vm;
pub mod vm_cid;
pub mod whoami;
