//! The dispatch table: every CPI API v2 method, its argument names, and the action that runs it.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::args::Arg;
use super::methods::*;
use super::{Args, Request, Response};
use crate::actions;
use crate::call::Call;
use crate::config::Config;
use crate::error::{CpiError, Result};

pub type Action = fn(&Call, &Args) -> Result<Value>;

pub struct Method {
    pub name: &'static str,
    pub args: &'static [Arg],
    /// Whether the call needs the config file (everything but info and ping).
    pub needs_config: bool,
    pub run: Action,
}

/// A table entry: the action gets its arguments decoded into the method's struct.
macro_rules! method {
    ($name:literal, $args:ident, $run:path) => {
        method!($name, $args, $run, needs_config: true)
    };
    ($name:literal, $args:ident, $run:path, needs_config: $needs:expr) => {
        Method {
            name: $name,
            args: $args::SPEC,
            needs_config: $needs,
            run: |call, args| $run(call, $args::decode(args)?),
        }
    };
}

pub static METHODS: &[Method] = &[
    method!("info", NoArgs, actions::info::run, needs_config: false),
    method!("ping", NoArgs, actions::ping::run, needs_config: false),
    method!(
        "create_stemcell",
        CreateStemcell,
        actions::create_stemcell::run
    ),
    method!(
        "delete_stemcell",
        DeleteStemcell,
        actions::delete_stemcell::run
    ),
    method!("create_vm", CreateVm, actions::create_vm::run),
    method!("delete_vm", DeleteVm, actions::delete_vm::run),
    method!("has_vm", HasVm, actions::has_vm::run),
    method!("reboot_vm", RebootVm, actions::reboot_vm::run),
    method!(
        "set_vm_metadata",
        SetVmMetadata,
        actions::set_vm_metadata::run
    ),
    method!(
        "calculate_vm_cloud_properties",
        CalculateVmCloudProperties,
        actions::calculate_vm_cloud_properties::run
    ),
    method!("create_disk", CreateDisk, actions::create_disk::run),
    method!("delete_disk", DeleteDisk, actions::delete_disk::run),
    method!("has_disk", HasDisk, actions::has_disk::run),
    method!("attach_disk", AttachDisk, actions::attach_disk::run),
    method!("detach_disk", DetachDisk, actions::detach_disk::run),
    method!(
        "set_disk_metadata",
        SetDiskMetadata,
        actions::set_disk_metadata::run
    ),
    method!("get_disks", GetDisks, actions::get_disks::run),
    method!("resize_disk", ResizeDisk, actions::resize_disk::run),
    method!("update_disk", UpdateDisk, actions::update_disk::run),
    method!("snapshot_disk", SnapshotDisk, actions::snapshot_disk::run),
    method!(
        "delete_snapshot",
        DeleteSnapshot,
        actions::delete_snapshot::run
    ),
    method!("create_network", CreateNetwork, actions::networks::create),
    method!("delete_network", DeleteNetwork, actions::networks::delete),
    method!("current_vm_id", NoArgs, actions::current_vm_id::run),
    method!(
        "configure_networks",
        ConfigureNetworks,
        actions::configure_networks::run
    ),
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
            Response::err(&e, summary(&request.method, &notes, &outcome, elapsed))
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
        return Err((e, Vec::new()));
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
}
