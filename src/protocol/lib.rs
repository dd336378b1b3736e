//! The BOSH CPI protocol, the role bosh-cpi-go plays for Go CPIs: one JSON request in, one JSON
//! response out. The envelope (`request`, `response`), every method's arguments and result
//! (`methods`, read through `args`), and the `Bosh::Clouds::*` error kinds (`error`). No Ironic,
//! no configuration, no actions: the CPI crate's dispatch table says which action runs a method.

pub mod args;
pub mod error;
pub mod methods;
pub mod request;
pub mod response;

pub use args::Args;
pub use error::{Error, ErrorKind, Result};
pub use methods::{Method, MethodDef, Reply, METHODS};
pub use request::{Context, Request};
pub use response::Response;
