//! BOSH CPI for bare metal through standalone OpenStack Ironic, and its companion server.

pub mod actions;
pub mod call;
pub mod config;
pub mod error;
pub mod logging;
pub mod rpc;

pub use error::{CpiError, ErrorKind, Result};
