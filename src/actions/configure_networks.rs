//! `configure_networks`: removed from CPI API v1; network changes need a new VM.

use crate::error::{CpiError, Result};
use crate::protocol::methods::ConfigureNetworks;

pub fn run(_args: ConfigureNetworks) -> Result<()> {
    Err(CpiError::not_supported(
        "configure_networks: changing networks of a running node is not supported; \
         the director recreates the VM instead",
    ))
}
