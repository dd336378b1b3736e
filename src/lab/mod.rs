//! Real processes for integration tests and benchmarks.

pub mod nginx;
pub mod server;
