//! The Ironic operations the CPI uses, as a trait: the HTTP client implements it against a real
//! Ironic, and the lab's in-memory model implements it for tests that must stop a CPI call at any
//! request, lose an answer, or interleave two calls request by request.
//!
//! Implementations retry transient failures themselves (409 NodeLocked, 503, connection
//! failures before the request left); what reaches the caller is either an answer or a failure
//! the caller must judge. A `Transport` error with `not_sent: false` means the request may have
//! been applied: callers of state-changing operations read the node back before going on.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::IronicClient;
use super::error::IronicError;
use super::query::{NodeQuery, PortQuery};
use super::types::{Node, PatchOp, Port};

pub trait Ironic: Sync {
    /// A node by UUID or name.
    fn get_node(&self, id: &str) -> Result<Node, IronicError>;
    /// The nodes matching `q`, page by page: `each` gets every page as it arrives and may stop
    /// the listing (`Break`). Only one page is held at a time, so a listing of the pool costs
    /// memory by the page, not by the pool.
    fn node_pages(
        &self,
        q: &NodeQuery,
        each: &mut dyn FnMut(Vec<Node>) -> ControlFlow<()>,
    ) -> Result<(), IronicError>;
    /// The ports matching `q`, page by page (see `node_pages`).
    fn port_pages(
        &self,
        q: &PortQuery,
        each: &mut dyn FnMut(Vec<Port>) -> ControlFlow<()>,
    ) -> Result<(), IronicError>;
    /// Every node matching `q`, collected: for filters that match a few nodes, never the pool.
    fn list_nodes(&self, q: &NodeQuery) -> Result<Vec<Node>, IronicError> {
        let mut out = Vec::new();
        self.node_pages(q, &mut |page| {
            out.extend(page);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }
    /// Every port matching `q`, collected: for filters that match a few ports (one node's, one
    /// MAC's).
    fn list_ports(&self, q: &PortQuery) -> Result<Vec<Port>, IronicError> {
        let mut out = Vec::new();
        self.port_pages(q, &mut |page| {
            out.extend(page);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }
    /// The API microversion requests go with (filters newer than it are applied in memory).
    fn microversion_in_use(&self) -> (u32, u32);
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
    fn node_pages(
        &self,
        q: &NodeQuery,
        each: &mut dyn FnMut(Vec<Node>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        IronicClient::node_pages(self, q, each)
    }
    fn port_pages(
        &self,
        q: &PortQuery,
        each: &mut dyn FnMut(Vec<Port>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        IronicClient::port_pages(self, q, each)
    }
    fn microversion_in_use(&self) -> (u32, u32) {
        IronicClient::microversion_in_use(self)
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
