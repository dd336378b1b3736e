//! The companion server: WebDAV storage for stemcells and config drives, and the BOSH registry API.
fn main() {
    eprintln!("ironic_cpi_server: not built yet");
    std::process::exit(1);
}
