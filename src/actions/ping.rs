//! `ping`: the director's RPC layer defines it as a liveness check; it needs nothing.

use serde_json::{json, Value};

use crate::call::Call;
use crate::error::Result;
use crate::rpc::methods::NoArgs;

pub fn run(_call: &Call, _args: NoArgs) -> Result<Value> {
    Ok(json!("pong"))
}
