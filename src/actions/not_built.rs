//! Methods whose actions are not built yet answer NotImplemented, which the director tolerates
//! where it can (metadata, has_vm, has_disk, snapshots) and reports plainly elsewhere.

use serde_json::Value;

use crate::call::Call;
use crate::error::{CpiError, Result};
use crate::rpc::Args;

pub fn run(_call: &Call, args: &Args) -> Result<Value> {
    Err(CpiError::not_implemented(format!(
        "{} is not built yet in this version of the Ironic CPI",
        args.method
    )))
}
