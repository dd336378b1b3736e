//! `ping`: the director's RPC layer defines it as a liveness check; it needs nothing.

use crate::error::Result;
use crate::protocol::methods::{Ping, Pong};

pub fn run(_args: Ping) -> Result<Pong> {
    Ok(Pong::Pong)
}
