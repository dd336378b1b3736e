//! This build's programs, for tests and benchmarks.
//!
//! Cargo tells an integration test where its own package's binaries are (`CARGO_BIN_EXE_*`),
//! but the companion server and the lab command are other packages of the workspace. They are
//! built through cargo (a no-op when up to date) once per process, with the test's own profile,
//! so that a test never runs a binary older than the sources it was compiled with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::process::repo_root;

/// `bin` of workspace package `package`, built if it is missing or stale.
pub fn workspace_binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(bin) {
        return Ok(path.clone());
    }
    let run = escargot::CargoBuild::new()
        .manifest_path(repo_root().join("Cargo.toml"))
        .package(package)
        .bin(bin)
        .current_release()
        .arg("--locked")
        .run()
        .map_err(|e| format!("cannot build {bin} (cargo build -p {package} --bin {bin}): {e}"))?;
    let path = run.path().to_path_buf();
    built.insert(bin.to_string(), path.clone());
    Ok(path)
}

/// The companion server: `$IRONIC_CPI_SERVER_BIN` (benchmarks point it at a release build), or
/// this build's.
pub fn server() -> Result<PathBuf, String> {
    match std::env::var_os("IRONIC_CPI_SERVER_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => workspace_binary("ironic_cpi_server", "ironic_cpi_server"),
    }
}

/// The `ironic_cpi_lab` command.
pub fn lab() -> Result<PathBuf, String> {
    workspace_binary("ironic_cpi_testkit", "ironic_cpi_lab")
}
