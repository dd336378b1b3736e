//! The companion server: WebDAV storage for stemcells and config drives, and the BOSH registry API.
//!
//! `ironic_cpi_server -c server.json` runs it; `--check-config` only validates the file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "ironic_cpi_server", version, about)]
struct Args {
    /// Configuration file (JSON; see docs/server.md).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Check the configuration and exit (0 if valid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    ironic_cpi_common::logging::init("ironic_cpi_server");
    let cfg = match ironic_cpi_server::ServerConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        if let Err(e) = ironic_cpi_server::check(&cfg) {
            log::error!("{e}");
            return ExitCode::from(2);
        }
        log::info!("config {} is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    match ironic_cpi_server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
