//! Client for the OpenStack Ironic API (standalone: noauth, http_basic or Keystone; HTTP or
//! HTTPS).
//!
//! One [`IronicClient`] per CPI call: it negotiates the microversion on first use and pins it,
//! retries only transient failures (409 NodeLocked, 503, connection errors), and waits for state
//! transitions with backoff, failing fast on `* failed`, `error`, maintenance and fault.

pub mod backoff;
mod client;
pub mod error;
pub mod keystone;
mod query;
mod tls;
pub mod types;
mod wait;

pub use client::IronicClient;
pub use error::{ConflictKind, IronicError};
pub use query::{AllocationQuery, NodeQuery, PortQuery};
pub use types::{Allocation, Node, PatchOp, Port};
