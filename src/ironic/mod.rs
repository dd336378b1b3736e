//! Client for the OpenStack Ironic API (standalone: noauth, http_basic or Keystone).

pub mod types;

pub use types::{Allocation, Node, PatchOp, Port};
