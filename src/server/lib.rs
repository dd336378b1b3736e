//! The companion server: WebDAV storage for stemcells and config drives, and the BOSH registry API.
//!
//! One tokio runtime, hyper HTTP/1.1, dav-server for WebDAV behind a router that checks paths and
//! credentials first and answers registry reads and plain file GETs on a fast path. See
//! `docs/server.md` for the configuration and the behaviour.

mod access_log;
mod atomic;
mod auth;
mod body;
pub mod config;
mod davfs;
mod files;
mod limits;
mod listener;
mod locks;
mod paths;
mod registry;
mod service;
mod sys;

pub use atomic::TEMP_PREFIX;
pub use config::{
    ConfigError, MountConfig, RegistryServerConfig, Role, ServerConfig, TlsConfig, UserConfig,
};
pub use listener::{check, run};
