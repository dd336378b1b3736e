//! BOSH CPI for bare metal through standalone OpenStack Ironic, and its companion server.

pub mod actions;
pub mod config;
pub mod configdrive;
pub mod disks;
pub mod error;
pub mod mac;
pub mod pool;
pub mod registry;
pub mod repository;
pub mod rpc;
pub mod services;
pub mod stemcell;
pub mod vm_data;
pub mod vm_type;

pub use bosh_cpi_protocol as protocol;
pub use error::{CpiError, ErrorKind, Result};
pub use ironic_client as ironic;
pub use ironic_cpi_common::{logging, redact};
