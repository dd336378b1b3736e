//! `current_vm_id`: deprecated, only used by the director's self-snapshot job. A CPI process
//! cannot tell which node it runs on.

use crate::error::{CpiError, Result};
use crate::protocol::methods::CurrentVmId;

pub fn run(_args: CurrentVmId) -> Result<String> {
    Err(CpiError::not_implemented(
        "current_vm_id: the Ironic CPI cannot tell which node the director runs on",
    ))
}
