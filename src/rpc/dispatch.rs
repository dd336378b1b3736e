//! The dispatch table: the action that runs each CPI method (`protocol::methods` defines them).

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::actions;
use crate::config::Config;
use crate::error::{CpiError, Result};
use crate::protocol::args::Arg;
use crate::protocol::methods::{self, *};
use crate::protocol::{Args, Request, Response};
use crate::services::Services;

/// Runs one method: decodes the arguments, builds what the action uses from the call's
/// services, runs it, and writes its result as JSON.
pub type Action = fn(&Services, &Args) -> Result<Value>;

pub struct Method {
    pub name: &'static str,
    pub args: &'static [Arg],
    /// Whether the call needs the config file (everything but info and ping).
    pub needs_config: bool,
    pub run: Action,
}

/// A table entry: the method's name and arguments come from its definition (`protocol::methods`);
/// `|services, args| action(...)` hands the action its decoded arguments and only the
/// dependencies it uses; its typed result is what the director receives.
macro_rules! method {
    ($args:ident, |$s:pat_param, $a:ident| $run:expr) => {
        method!($args, needs_config: true, |$s, $a| $run)
    };
    ($args:ident, needs_config: $needs:expr, |$s:pat_param, $a:ident| $run:expr) => {
        Method {
            name: <$args as methods::Method>::NAME,
            args: <$args as methods::Method>::SPEC,
            needs_config: $needs,
            run: |$s, args| {
                let $a = <$args as methods::Method>::decode(args)?;
                let result: <$args as methods::Method>::Result = $run?;
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

/// The composition root of every method, in the order of `protocol::methods::METHODS` (a test
/// holds them to it). `s` is the call's `Services`: each dependency is built on first use, once.
pub static METHODS: &[Method] = &[
    method!(Info, needs_config: false, |_, a| actions::info::run(a)),
    method!(Ping, needs_config: false, |_, a| actions::ping::run(a)),
    method!(CreateStemcell, |s, a| actions::create_stemcell::run(
        &s.stemcells,
        &s.notes,
        a
    )),
    method!(DeleteStemcell, |s, a| actions::delete_stemcell::run(
        &s.stemcells,
        &s.notes,
        a
    )),
    method!(CreateVm, |s, a| actions::create_vm::run(
        actions::create_vm::Deps {
            config: s.config()?,
            ironic: &s.ironic,
            stemcells: &s.stemcells,
            files: s.vm_data(),
            api_version: s.api_version(),
            me: s.process(),
        },
        a
    )),
    method!(DeleteVm, |s, a| actions::delete_vm::run(
        s.config()?,
        &s.ironic,
        s.vm_data(),
        s.process(),
        a
    )),
    method!(HasVm, |s, a| actions::has_vm::run(&s.ironic, &s.notes, a)),
    method!(RebootVm, |s, a| actions::reboot_vm::run(
        s.config()?,
        &s.ironic,
        &s.notes,
        a
    )),
    method!(SetVmMetadata, |s, a| actions::set_vm_metadata::run(
        &s.ironic, &s.notes, a
    )),
    method!(CalculateVmCloudProperties, |_, a| {
        actions::calculate_vm_cloud_properties::run(a)
    }),
    method!(CreateDisk, |s, a| actions::create_disk::run(
        s.config()?,
        &s.ironic,
        &s.notes,
        a
    )),
    method!(DeleteDisk, |s, a| actions::delete_disk::run(
        &s.ironic, &s.notes, a
    )),
    method!(HasDisk, |s, a| actions::has_disk::run(&s.ironic, a)),
    method!(AttachDisk, |s, a| actions::attach_disk::run(
        &s.ironic,
        s.registry(),
        &s.notes,
        s.api_version(),
        a
    )),
    method!(DetachDisk, |s, a| actions::detach_disk::run(
        &s.ironic,
        s.registry(),
        &s.notes,
        a
    )),
    method!(SetDiskMetadata, |s, a| actions::set_disk_metadata::run(
        &s.ironic, a
    )),
    method!(GetDisks, |s, a| actions::get_disks::run(&s.ironic, a)),
    method!(ResizeDisk, |_, a| actions::resize_disk::run(a)),
    method!(UpdateDisk, |_, a| actions::update_disk::run(a)),
    method!(SnapshotDisk, |_, a| actions::snapshot_disk::run(a)),
    method!(DeleteSnapshot, |_, a| actions::delete_snapshot::run(a)),
    method!(CreateNetwork, |_, a| actions::networks::create(a)),
    method!(DeleteNetwork, |_, a| actions::networks::delete(a)),
    method!(CurrentVmId, |_, a| actions::current_vm_id::run(a)),
    method!(ConfigureNetworks, |_, a| actions::configure_networks::run(
        a
    )),
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
            // The message already quotes the cause in words; the chain is for whoever debugs.
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                log::debug!("  caused by: {c}");
                cause = c.source();
            }
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
    let services = Services::new(request, config.as_ref());
    log::info!(
        "{} (api_version {}, stemcell api_version {})",
        method.name,
        request.api_version,
        request
            .context
            .stemcell_api_version
            .map_or_else(|| "-".to_string(), |v| v.to_string())
    );
    let result = (method.run)(&services, &args);
    let notes = services.take_notes();
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
