//! The dispatch table: every CPI API v2 method, its argument names, and the action that runs it.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::{Args, Request, Response};
use crate::actions;
use crate::call::Call;
use crate::config::Config;
use crate::error::{CpiError, Result};

pub type Action = fn(&Call, &Args) -> Result<Value>;

pub struct Method {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Whether the call needs the config file (everything but info and ping).
    pub needs_config: bool,
    pub run: Action,
}

const fn method(name: &'static str, args: &'static [&'static str], run: Action) -> Method {
    Method {
        name,
        args,
        needs_config: true,
        run,
    }
}

pub static METHODS: &[Method] = &[
    Method {
        name: "info",
        args: &[],
        needs_config: false,
        run: actions::info::run,
    },
    Method {
        name: "ping",
        args: &[],
        needs_config: false,
        run: actions::ping::run,
    },
    method(
        "create_stemcell",
        &["image_path", "cloud_properties"],
        actions::not_built::run,
    ),
    method(
        "delete_stemcell",
        &["stemcell_cid"],
        actions::not_built::run,
    ),
    method(
        "create_vm",
        &[
            "agent_id",
            "stemcell_cid",
            "cloud_properties",
            "networks",
            "disk_cids",
            "env",
        ],
        actions::not_built::run,
    ),
    method("delete_vm", &["vm_cid"], actions::not_built::run),
    method("has_vm", &["vm_cid"], actions::not_built::run),
    method("reboot_vm", &["vm_cid"], actions::not_built::run),
    method(
        "set_vm_metadata",
        &["vm_cid", "metadata"],
        actions::not_built::run,
    ),
    method(
        "calculate_vm_cloud_properties",
        &["desired_instance_size"],
        actions::not_built::run,
    ),
    method(
        "create_disk",
        &["size", "cloud_properties", "vm_cid"],
        actions::not_built::run,
    ),
    method("delete_disk", &["disk_cid"], actions::not_built::run),
    method("has_disk", &["disk_cid"], actions::not_built::run),
    method(
        "attach_disk",
        &["vm_cid", "disk_cid"],
        actions::not_built::run,
    ),
    method(
        "detach_disk",
        &["vm_cid", "disk_cid"],
        actions::not_built::run,
    ),
    method(
        "set_disk_metadata",
        &["disk_cid", "metadata"],
        actions::not_built::run,
    ),
    method("get_disks", &["vm_cid"], actions::not_built::run),
    method(
        "resize_disk",
        &["disk_cid", "new_size"],
        actions::not_built::run,
    ),
    method(
        "update_disk",
        &["disk_cid", "new_size", "cloud_properties"],
        actions::not_built::run,
    ),
    method(
        "snapshot_disk",
        &["disk_cid", "metadata"],
        actions::not_built::run,
    ),
    method(
        "delete_snapshot",
        &["snapshot_cid"],
        actions::not_built::run,
    ),
    method(
        "create_network",
        &["network_definition"],
        actions::networks::run,
    ),
    method("delete_network", &["network_cid"], actions::networks::run),
    method("current_vm_id", &[], actions::current_vm_id::run),
    method(
        "configure_networks",
        &["vm_cid", "networks"],
        actions::configure_networks::run,
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
    let call = Call::new(request, config.as_ref());
    let args = Args::new(method.name, method.args, &request.arguments);
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
