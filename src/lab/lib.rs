//! Real processes for integration tests, benchmarks and the lab: Ironic, Keystone, the companion
//! server and nginx, each in its own directory, stopped when the process that started them exits;
//! the test CA that TLS tests trust; and an in-memory model of Ironic for tests that must
//! interleave or break calls request by request.

pub mod binaries;
pub mod bosh_tools;
pub mod certs;
pub mod cpi;
pub mod faultproxy;
pub mod figures;
pub mod files;
pub mod ironic;
pub mod keystone;
pub mod model;
pub mod nginx;
pub mod process;
pub mod server;
pub mod tls;
