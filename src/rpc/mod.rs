//! The CPI's RPC layer: one JSON request in, one JSON response out.
//!
//! Thin on purpose (bosh-cpi-go's model): parse and check the envelope, find the action in the
//! dispatch table, turn whatever happens into a response the director can read.

pub mod args;
pub mod dispatch;
pub mod methods;
pub mod request;
pub mod response;

pub use args::Args;
pub use request::{Context, Request};
pub use response::Response;
