//! The lab every real-component test of the CPI starts: it runs this build's `ironic_cpi`, which
//! only a test crate of this package can name (`CARGO_BIN_EXE_ironic_cpi`). Every other shared
//! helper lives in the test kit (`ironic_cpi_testkit`).

use ironic_cpi_testkit::cpi::{CpiLab, CpiLabOptions};
use ironic_cpi_testkit::ironic::IronicLabOptions;

/// A lab (Ironic, companion server) whose CPI is this build's `ironic_cpi`.
pub fn start_lab(ironic: IronicLabOptions, registry: bool, publish_configdrive: bool) -> CpiLab {
    CpiLab::start(CpiLabOptions {
        ironic,
        registry,
        publish_configdrive,
        cpi_binary: env!("CARGO_BIN_EXE_ironic_cpi").into(),
        server_binary: Some(ironic_cpi_testkit::binaries::server().unwrap()),
    })
    .unwrap_or_else(|e| panic!("lab: {e}"))
}
