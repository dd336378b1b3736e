//! `create_network` / `delete_network`: networks on bare metal are the operator's switches and
//! DHCP, not something this CPI manages (the director only calls these with
//! `director.networks.enable_cpi_management`).

use crate::error::{CpiError, Result};
use crate::protocol::methods::{CreateNetwork, DeleteNetwork, NetworkCreated};

pub fn create(_args: CreateNetwork) -> Result<NetworkCreated> {
    Err(unmanaged("create_network"))
}

pub fn delete(_args: DeleteNetwork) -> Result<()> {
    Err(unmanaged("delete_network"))
}

fn unmanaged(method: &str) -> CpiError {
    CpiError::not_implemented(format!(
        "{method}: the Ironic CPI does not manage networks; define them in the cloud-config \
         and leave director.networks.enable_cpi_management off"
    ))
}
