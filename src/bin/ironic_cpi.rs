//! `ironic_cpi -c CONFIG`: the CPI executable the BOSH director runs once per call.
//!
//! Reads one JSON request from stdin, writes one JSON response to stdout, logs to stderr, and
//! exits 0 whenever it wrote a response (bosh create-env treats any other exit as a hard failure).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use ironic_cpi::config::Config;
use ironic_cpi::error::CpiError;
use ironic_cpi::ironic::IronicClient;
use ironic_cpi::ironic::Node;
use ironic_cpi::pool::teardown::Teardown;
use ironic_cpi::pool::whoami::{on_this_host, Process};
use ironic_cpi::pool::{orphans, view};
use ironic_cpi::protocol::{request::MAX_REQUEST_BYTES, Response};
use ironic_cpi::redact;
use ironic_cpi::rpc::dispatch;

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

    /// Operator tools; without one, the CPI reads a request on stdin as the director runs it.
    #[command(subcommand)]
    tool: Option<Tool>,
}

#[derive(Subcommand, Debug)]
enum Tool {
    /// Show the node pool as the CPI sees it: state, power, who holds each node, BOSH metadata,
    /// disks, and claims nobody will finish (stale).
    Pool {
        /// A claim with no progress for this long is stale (e.g. `15m`, `1h`).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        stale_after: std::time::Duration,
    },
    /// Return one node whose claim nobody will finish (a create_vm or delete_vm that was
    /// killed) to the pool, as delete_vm would. Refuses a claim that is not stale, a VM the
    /// director knows, and a node where an agent may be running, unless --force.
    ///
    /// Example: ironic_cpi -c cpi.json free 1be26c0b-03f2-4d2e-ae87-c02d7f33c123
    Free {
        /// Node UUID or name.
        node: String,
        /// A claim with no progress for this long is stale (e.g. `15m`, `1h`).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        stale_after: std::time::Duration,
        /// Free the node even if its claim looks live or an agent may run there.
        #[arg(long)]
        force: bool,
    },
    /// Build a CPI request from arguments, run it, and print the response (exit 1 on an error
    /// response). Each ARG is JSON if it parses as JSON, `@FILE` for JSON in a file, else a string.
    ///
    /// Example: ironic_cpi -c cpi.json call create_disk 10240 '{}' 1be26c0b-03f2-4d2e-ae87-c02d7f33c123
    Call {
        method: String,
        args: Vec<String>,
        /// The request's api_version (what the director negotiated).
        #[arg(long, default_value_t = 2)]
        api_version: u32,
        /// context.vm.stemcell.api_version (stemcells of the Jammy era say 3).
        #[arg(long)]
        stemcell_api_version: Option<u32>,
        /// Print the request instead of running it (to pipe into the CPI later).
        #[arg(long)]
        print_request: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ironic_cpi::logging::init("ironic_cpi");

    if cli.check_config {
        return check_config(cli.config);
    }
    match cli.tool {
        Some(Tool::Pool { stale_after }) => return pool(cli.config, stale_after),
        Some(Tool::Free {
            node,
            stale_after,
            force,
        }) => return free(cli.config, &node, stale_after, force),
        Some(Tool::Call {
            method,
            args,
            api_version,
            stemcell_api_version,
            print_request,
        }) => {
            return call(
                cli.config,
                &method,
                &args,
                api_version,
                stemcell_api_version,
                print_request,
            )
        }
        None => {}
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
                    Response::err(&e.to_wire(), String::new())
                })
        }
        Err(e) => {
            log::error!("{e}");
            Response::err(&e.to_wire(), String::new())
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
        .map_err(|e| {
            CpiError::cpi(format!("cannot read the request from stdin: {e}")).because(e)
        })?;
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
            // URLs may carry `user:password@`: show them without.
            let shown = |u: Option<&str>| u.map_or("none".to_string(), redact::url_text);
            println!(
                "{}: valid (Ironic at {}, registry {}, stemcell repository {}, metadata repository {})",
                path.display(),
                shown(Some(&config.ironic.url)),
                if config.registry.is_some() { "configured" } else { "none" },
                shown(config.stemcell_repository.as_ref().map(|r| r.url.as_str())),
                shown(config.metadata_repository.as_ref().map(|r| r.url.as_str())),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(1)
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.ok_or("this tool needs -c CONFIG")?;
    Config::load(&path, &serde_json::Map::new()).map_err(|e| e.message)
}

fn pool(config: Option<PathBuf>, stale_after: std::time::Duration) -> ExitCode {
    let run = || -> Result<(), String> {
        let config = load(config)?;
        let client = IronicClient::new(&config.ironic).map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now();
        // Rows go out as Ironic's pages come in: a fleet's view never holds the fleet.
        view::print(&client, now, stale_after, &mut std::io::stdout().lock())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironic_cpi pool: {e}");
            ExitCode::from(1)
        }
    }
}

fn free(
    config: Option<PathBuf>,
    node: &str,
    stale_after: std::time::Duration,
    force: bool,
) -> ExitCode {
    let run = || -> Result<Vec<String>, String> {
        let config = load(config)?;
        let client = IronicClient::new(&config.ironic).map_err(|e| e.to_string())?;
        let request = ironic_cpi::protocol::Request::from_value(json!({
            "method": "free", "arguments": [], "context": {}}))
        .map_err(|e| e.message)?;
        let services = ironic_cpi::services::Services::new(&request, Some(&config));
        let files = services.vm_data();
        let teardown = Teardown {
            api: &client,
            ironic: &config.ironic,
            me: Process::current(Some("ironic_cpi free")),
            may_drop_vm_claim: true,
            force,
            liveness: &on_this_host,
        };
        // The registry settings and published drive of a VM being freed go with it.
        let before = |n: &Node| ironic_cpi::vm_data::remove(&files, &n.uuid);
        orphans::free(&teardown, node, stale_after, &before).map(|f| f.steps)
    };
    match run() {
        Ok(steps) => {
            for s in steps {
                println!("{s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ironic_cpi free: {e}");
            ExitCode::from(1)
        }
    }
}

/// A command-line argument as a JSON value: JSON when it parses, `@FILE` for a JSON file, else
/// the plain string (so ids need no quoting).
fn argument(arg: &str) -> Result<Value, String> {
    if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        return serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"));
    }
    Ok(serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.to_string())))
}

fn call(
    config: Option<PathBuf>,
    method: &str,
    args: &[String],
    api_version: u32,
    stemcell_api_version: Option<u32>,
    print_request: bool,
) -> ExitCode {
    let arguments: Result<Vec<Value>, String> = args.iter().map(|a| argument(a)).collect();
    let arguments = match arguments {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ironic_cpi call: {e}");
            return ExitCode::from(2);
        }
    };
    let mut context = json!({"director_uuid": "ironic-cpi-cli"});
    if let Some(v) = stemcell_api_version {
        context["vm"] = json!({"stemcell": {"api_version": v}});
    }
    let request = json!({
        "method": method,
        "arguments": arguments,
        "context": context,
        "api_version": api_version,
    });
    if print_request {
        println!("{request}");
        return ExitCode::SUCCESS;
    }
    let response = dispatch::handle(request.to_string().as_bytes(), config.as_deref());
    #[expect(clippy::expect_used, reason = "a serde_json::Value always serialises")]
    let pretty = serde_json::to_string_pretty(&response).expect("response serialises");
    println!("{pretty}");
    if response.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
