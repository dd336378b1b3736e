//! The dispatch table: the action that runs each CPI method (`protocol::methods` defines them).

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::actions;
use crate::call::Call;
use crate::config::Config;
use crate::error::{CpiError, Result};
use crate::protocol::args::Arg;
use crate::protocol::methods::{self, *};
use crate::protocol::{Args, Request, Response};

pub type Action = fn(&Call, &Args) -> Result<Value>;

pub struct Method {
    pub name: &'static str,
    pub args: &'static [Arg],
    /// Whether the call needs the config file (everything but info and ping).
    pub needs_config: bool,
    pub run: Action,
}

/// A table entry: the method's name and arguments come from its definition (`protocol::methods`);
/// the action gets its arguments decoded into the method's struct, and its typed result is
/// what the director receives.
macro_rules! method {
    ($args:ident, $run:path) => {
        method!($args, $run, needs_config: true)
    };
    ($args:ident, $run:path, needs_config: $needs:expr) => {
        Method {
            name: <$args as methods::Method>::NAME,
            args: <$args as methods::Method>::SPEC,
            needs_config: $needs,
            run: |call, args| {
                let result: <$args as methods::Method>::Result =
                    $run(call, <$args as methods::Method>::decode(args)?)?;
                answer(&result)
            },
        }
    };
}

/// The result as the response carries it.
fn answer<T: serde::Serialize>(result: &T) -> Result<Value> {
    serde_json::to_value(result)
        .map_err(|e| CpiError::cpi(format!("the result cannot be written as JSON: {e}")))
}

/// In the order of `methods::METHODS` (a test holds them to it).
pub static METHODS: &[Method] = &[
    method!(Info, actions::info::run, needs_config: false),
    method!(Ping, actions::ping::run, needs_config: false),
    method!(CreateStemcell, actions::create_stemcell::run),
    method!(DeleteStemcell, actions::delete_stemcell::run),
    method!(CreateVm, actions::create_vm::run),
    method!(DeleteVm, actions::delete_vm::run),
    method!(HasVm, actions::has_vm::run),
    method!(RebootVm, actions::reboot_vm::run),
    method!(SetVmMetadata, actions::set_vm_metadata::run),
    method!(
        CalculateVmCloudProperties,
        actions::calculate_vm_cloud_properties::run
    ),
    method!(CreateDisk, actions::create_disk::run),
    method!(DeleteDisk, actions::delete_disk::run),
    method!(HasDisk, actions::has_disk::run),
    method!(AttachDisk, actions::attach_disk::run),
    method!(DetachDisk, actions::detach_disk::run),
    method!(SetDiskMetadata, actions::set_disk_metadata::run),
    method!(GetDisks, actions::get_disks::run),
    method!(ResizeDisk, actions::resize_disk::run),
    method!(UpdateDisk, actions::update_disk::run),
    method!(SnapshotDisk, actions::snapshot_disk::run),
    method!(DeleteSnapshot, actions::delete_snapshot::run),
    method!(CreateNetwork, actions::networks::create),
    method!(DeleteNetwork, actions::networks::delete),
    method!(CurrentVmId, actions::current_vm_id::run),
    method!(ConfigureNetworks, actions::configure_networks::run),
];

pub fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

/// Handle one raw request: never panics into the caller, always yields a response.
pub fn handle(input: &[u8], config_path: Option<&Path>) -> Response {
    let started = Instant::now();
    let request = match Request::parse(input) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return Response::err(&e, format!("rejected request: {}", e.message));
        }
    };
    crate::logging::set_request_id(request.context.request_id.as_deref());
    let outcome = run(&request, config_path);
    let elapsed = started.elapsed().as_secs_f64();
    match outcome {
        Ok((result, notes)) => {
            log::info!("{} succeeded in {elapsed:.3} s", request.method);
            Response::ok(result, summary(&request.method, &notes, "ok", elapsed))
        }
        Err((e, notes)) => {
            log::error!("{} failed after {elapsed:.3} s: {e}", request.method);
            let outcome = format!("failed ({})", e.kind.bosh_type());
            Response::err(
                &e.to_wire(),
                summary(&request.method, &notes, &outcome, elapsed),
            )
        }
    }
}

type Outcome = std::result::Result<(Value, Vec<String>), (CpiError, Vec<String>)>;

fn run(request: &Request, config_path: Option<&Path>) -> Outcome {
    let Some(method) = find(&request.method) else {
        let known: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        return Err((
            CpiError::not_implemented(format!(
                "Must call implemented method: '{}' is not a CPI method this CPI knows (known: {})",
                request.method,
                known.join(", ")
            )),
            Vec::new(),
        ));
    };
    let config = if method.needs_config {
        match load_config(request, config_path) {
            Ok(c) => Some(c),
            Err(e) => return Err((e, Vec::new())),
        }
    } else {
        None
    };
    let args = Args::new(method.name, method.args, &request.arguments);
    if let Err(e) = args.check() {
        return Err((e.into(), Vec::new()));
    }
    let call = Call::new(request, config.as_ref());
    log::info!(
        "{} (api_version {}, stemcell api_version {})",
        method.name,
        request.api_version,
        request
            .context
            .stemcell_api_version
            .map_or_else(|| "-".to_string(), |v| v.to_string())
    );
    let result = (method.run)(&call, &args);
    let notes = call.take_notes();
    match result {
        Ok(v) => Ok((v, notes)),
        Err(e) => Err((e, notes)),
    }
}

fn load_config(request: &Request, config_path: Option<&Path>) -> Result<Config> {
    let path = config_path.ok_or_else(|| {
        CpiError::cpi("no config file given: run the CPI as `ironic_cpi -c /path/to/cpi.json`")
    })?;
    Config::load(path, &request.context.config_overrides)
}

fn summary(method: &str, notes: &[String], outcome: &str, elapsed: f64) -> String {
    let mut s = format!("ironic_cpi {method}: {outcome} in {elapsed:.3} s");
    for n in notes {
        s.push_str("\n  ");
        s.push_str(n);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_unique_names() {
        let mut names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METHODS.len());
    }

    #[test]
    fn every_defined_method_has_its_action() {
        let table: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        let defined: Vec<_> = methods::METHODS.iter().map(|m| m.name).collect();
        assert_eq!(table, defined);
    }
}
