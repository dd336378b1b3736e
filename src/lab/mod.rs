//! Real processes for integration tests and benchmarks: Ironic (and, from other modules, the
//! companion server and nginx), each in its own directory, stopped when the test process exits.

pub mod cpi;
pub mod faultproxy;
pub mod ironic;
pub mod nginx;
pub mod process;
pub mod server;
