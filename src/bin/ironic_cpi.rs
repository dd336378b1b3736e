//! `ironic_cpi -c CONFIG`: the CPI executable the BOSH director runs once per call.
//!
//! Reads one JSON request from stdin, writes one JSON response to stdout, logs to stderr, and
//! exits 0 whenever it wrote a response (bosh create-env treats any other exit as a hard failure).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use ironic_cpi::config::Config;
use ironic_cpi::error::CpiError;
use ironic_cpi::rpc::{dispatch, request::MAX_REQUEST_BYTES, Response};

#[derive(Parser, Debug)]
#[command(
    name = "ironic_cpi",
    version,
    about = "BOSH CPI for bare metal through OpenStack Ironic",
    long_about = "Reads one CPI request (JSON) on stdin and writes one response on stdout.\n\n\
        Example:\n  echo '{\"method\":\"info\",\"arguments\":[],\"context\":{\"director_uuid\":\"d\"}}' \
        | ironic_cpi -c cpi.json"
)]
struct Cli {
    /// Path of the CPI config file (JSON).
    #[arg(short = 'c', long = "config", value_name = "CONFIG")]
    config: Option<PathBuf>,

    /// Check the config file and exit: 0 when valid, 1 with the reason on stderr otherwise.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ironic_cpi::logging::init("ironic_cpi");

    if cli.check_config {
        return check_config(cli.config);
    }

    let response = match read_request() {
        Ok(input) => {
            let config = cli.config.clone();
            // A bug must still produce a response the director can read, not an empty stdout.
            std::panic::catch_unwind(move || dispatch::handle(&input, config.as_deref()))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    let e = CpiError::cpi(format!(
                        "internal error in the Ironic CPI (a bug, please report it): {what}"
                    ));
                    Response::err(&e, String::new())
                })
        }
        Err(e) => {
            log::error!("{e}");
            Response::err(&e, String::new())
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", response.to_json())
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Read all of stdin, refusing (not truncating) anything over the limit.
fn read_request() -> Result<Vec<u8>, CpiError> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut input)
        .map_err(|e| CpiError::cpi(format!("cannot read the request from stdin: {e}")))?;
    if input.len() > MAX_REQUEST_BYTES {
        return Err(CpiError::cpi(format!(
            "request is larger than {} MiB; refusing it rather than reading part of it",
            MAX_REQUEST_BYTES / (1024 * 1024)
        )));
    }
    Ok(input)
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("--check-config needs -c CONFIG");
        return ExitCode::from(2);
    };
    match Config::load(&path, &serde_json::Map::new()) {
        Ok(config) => {
            println!(
                "{}: valid (Ironic at {}, registry {}, stemcell repository {}, metadata repository {})",
                path.display(),
                config.ironic.url,
                if config.registry.is_some() { "configured" } else { "none" },
                config.stemcell_repository.as_ref().map_or("none", |r| r.url.as_str()),
                config.metadata_repository.as_ref().map_or("none", |r| r.url.as_str()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(1)
        }
    }
}
