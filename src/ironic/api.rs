//! The Ironic operations the CPI uses, as a trait: the HTTP client implements it against a real
//! Ironic, and the lab's in-memory model implements it for tests that must stop a CPI call at any
//! request, lose an answer, or interleave two calls request by request.
//!
//! Implementations retry transient failures themselves (409 NodeLocked, 503, connection
//! failures before the request left); what reaches the caller is either an answer or a failure
//! the caller must judge. A `Transport` error with `not_sent: false` means the request may have
//! been applied: callers of state-changing operations read the node back before going on.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::IronicClient;
use super::error::IronicError;
use super::query::{NodeQuery, PortQuery};
use super::types::{Node, PatchOp, Port};

pub trait Ironic: Sync {
    /// A node by UUID or name.
    fn get_node(&self, id: &str) -> Result<Node, IronicError>;
    /// Every node matching `q`, following pagination.
    fn list_nodes(&self, q: &NodeQuery) -> Result<Vec<Node>, IronicError>;
    /// Every port matching `q`, following pagination.
    fn list_ports(&self, q: &PortQuery) -> Result<Vec<Port>, IronicError>;
    fn create_node(&self, body: &Value) -> Result<Node, IronicError>;
    /// One JSON Patch, applied by Ironic as one update (and refused as a whole).
    fn patch_node(&self, id: &str, ops: &[PatchOp]) -> Result<Node, IronicError>;
    fn delete_node(&self, id: &str) -> Result<(), IronicError>;
    /// A provision action (`provide`, `manage`, `active`, `deleted`, `clean`, ...) with the
    /// members of `body` (`configdrive`, `clean_steps`).
    fn set_provision_state(
        &self,
        id: &str,
        target: &str,
        body: Option<Value>,
    ) -> Result<(), IronicError>;
    /// `power on`, `power off` or `rebooting`.
    fn set_power_state(&self, id: &str, target: &str) -> Result<(), IronicError>;
    /// The driver's interface-by-interface validation.
    fn validate_node(&self, id: &str) -> Result<Value, IronicError>;
    fn create_port(
        &self,
        node_uuid: &str,
        address: &str,
        extra: Option<Value>,
    ) -> Result<Port, IronicError>;
    /// Requests sent so far, retries included (for the call's log and the benchmarks).
    fn request_count(&self) -> u64;
    /// Monotonic time since an arbitrary start; simulated in the model.
    fn now(&self) -> Duration;
    /// Pause between polls and retries; simulated in the model (where it lets others run).
    fn sleep(&self, d: Duration);
}

/// Where the HTTP client's monotonic clock starts (the trait's `now` needs an origin).
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Ironic for IronicClient {
    fn get_node(&self, id: &str) -> Result<Node, IronicError> {
        IronicClient::get_node(self, id)
    }
    fn list_nodes(&self, q: &NodeQuery) -> Result<Vec<Node>, IronicError> {
        IronicClient::list_nodes(self, q)
    }
    fn list_ports(&self, q: &PortQuery) -> Result<Vec<Port>, IronicError> {
        IronicClient::list_ports(self, q)
    }
    fn create_node(&self, body: &Value) -> Result<Node, IronicError> {
        IronicClient::create_node(self, body)
    }
    fn patch_node(&self, id: &str, ops: &[PatchOp]) -> Result<Node, IronicError> {
        IronicClient::patch_node(self, id, ops)
    }
    fn delete_node(&self, id: &str) -> Result<(), IronicError> {
        IronicClient::delete_node(self, id)
    }
    fn set_provision_state(
        &self,
        id: &str,
        target: &str,
        body: Option<Value>,
    ) -> Result<(), IronicError> {
        IronicClient::set_provision_state(self, id, target, body)
    }
    fn set_power_state(&self, id: &str, target: &str) -> Result<(), IronicError> {
        IronicClient::set_power_state(self, id, target)
    }
    fn validate_node(&self, id: &str) -> Result<Value, IronicError> {
        IronicClient::validate_node(self, id)
    }
    fn create_port(
        &self,
        node_uuid: &str,
        address: &str,
        extra: Option<Value>,
    ) -> Result<Port, IronicError> {
        IronicClient::create_port(self, node_uuid, address, extra)
    }
    fn request_count(&self) -> u64 {
        IronicClient::request_count(self)
    }
    fn now(&self) -> Duration {
        origin().elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
