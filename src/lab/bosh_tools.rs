//! The real BOSH programs the tests run against: the `bosh` CLI and the `bosh-agent`.
//!
//! Neither is on a package registry this project can reach, so they are found, in order, at
//! `$BOSH_CLI` / `$BOSH_AGENT`, next to the repository in `../shared/tools/` (where the project's
//! machines keep them, see README there), or on `PATH`. A missing program is an error that says
//! where to put it: tests that need one fail instead of passing without it.

use std::path::PathBuf;

use super::process::repo_root;

/// The bosh CLI (7.x).
pub fn bosh_cli() -> Result<PathBuf, String> {
    find("bosh", "BOSH_CLI")
}

/// The BOSH agent as stemcells ship it.
pub fn bosh_agent() -> Result<PathBuf, String> {
    find("bosh-agent", "BOSH_AGENT")
}

fn find(name: &str, variable: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{variable}={} is not a file", path.display()))
        };
    }
    let shared = repo_root().join("../shared/tools").join(name);
    if shared.is_file() {
        return Ok(shared);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    Err(format!(
        "the real `{name}` is needed: set {variable} to it, or put it at {} or on PATH",
        shared.display()
    ))
}
