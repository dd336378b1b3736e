//! Client for the OpenStack Ironic API (standalone: noauth, http_basic or Keystone; HTTP or
//! HTTPS).
//!
//! One [`IronicClient`] per CPI call: it negotiates the microversion on first use and pins it,
//! retries only transient failures (409 NodeLocked, 503, connection errors), and waits for state
//! transitions with backoff, failing fast on `* failed`, `error`, maintenance and fault.

mod api;
mod body;
mod client;
pub mod config;
pub mod error;
#[cfg(test)]
mod hostile_tests;
pub mod keystone;
mod query;
mod tls;
pub mod types;
pub mod wait;

pub use api::Ironic;
pub use client::IronicClient;
pub use error::{ConflictKind, IronicError};
pub use query::{NodeQuery, PortQuery};
pub use types::{Node, PatchOp, Port};
