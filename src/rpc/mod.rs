//! The CPI's side of the protocol: which action runs each method (`dispatch`). The envelope,
//! the methods' arguments and results and the error kinds are the protocol crate's
//! (`bosh_cpi_protocol`, re-exported as `crate::protocol`).

pub mod dispatch;
