//! `create_network` / `delete_network`: networks on bare metal are the operator's switches and
//! DHCP, not something this CPI manages (the director only calls these with
//! `director.networks.enable_cpi_management`).

use serde_json::Value;

use crate::call::Call;
use crate::error::{CpiError, Result};
use crate::rpc::Args;

pub fn run(_call: &Call, args: &Args) -> Result<Value> {
    Err(CpiError::not_implemented(format!(
        "{}: the Ironic CPI does not manage networks; define them in the cloud-config \
         and leave director.networks.enable_cpi_management off",
        args.method
    )))
}
