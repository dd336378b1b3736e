//! `ping`: the director's RPC layer defines it as a liveness check; it needs nothing.

use crate::call::Call;
use crate::error::Result;
use crate::protocol::methods::{Ping, Pong};

pub fn run(_call: &Call, _args: Ping) -> Result<Pong> {
    Ok(Pong::Pong)
}
