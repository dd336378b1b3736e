//! Shared by the concurrency, faults and secrets tests: a lab running this build's binaries, a
//! stemcell in it, the pool state that must come back after a VM comes and goes, and CPI config
//! variants.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;

use serde_json::{json, Value};

use ironic_cpi::ironic::{IronicClient, NodeQuery};
use ironic_cpi_testkit::cpi::{make_stemcell_image, CallOutcome, CpiLab, CpiLabOptions};
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

/// A stemcell of `size` bytes uploaded through the CPI (`config`, or the lab's); its cid.
pub fn upload_stemcell(lab: &CpiLab, config: Option<&Path>, size: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let image = make_stemcell_image(dir.path(), size, true).unwrap();
    let args = json!([image.to_str().unwrap(),
                      {"name": "s", "version": "1", "disk_format": "qcow2"}]);
    let out = lab.call_with_config(
        config.unwrap_or(&lab.config_path),
        "create_stemcell",
        args,
        2,
        None,
    );
    out.ok().as_str().unwrap().to_string()
}

/// Everything a VM's coming and going could leave behind on the nodes of `rc`, by uuid.
pub fn pool_state(client: &IronicClient, rc: &str) -> Vec<Value> {
    let mut nodes = client
        .list_nodes(&NodeQuery {
            resource_class: Some(rc.into()),
            ..Default::default()
        })
        .unwrap();
    nodes.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    nodes
        .into_iter()
        .map(|n| {
            json!({"uuid": n.uuid, "name": n.name, "state": n.provision_state,
                   "target": n.target_provision_state, "instance_uuid": n.instance_uuid,
                   "maintenance": n.maintenance, "extra": n.extra,
                   "instance_info": n.instance_info})
        })
        .collect()
}

/// Every file under `dir`, recursively (nothing when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The CPI config at `base` with `edit` applied, written to `dir/name`.
pub fn config_variant(
    base: &Path,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let mut config: Value = serde_json::from_slice(&std::fs::read(base).unwrap()).unwrap();
    edit(&mut config);
    let path = dir.join(name);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A `VMCreationFailed` the director may retry; its message.
pub fn assert_retryable_creation_failure(out: &CallOutcome) -> &str {
    assert_eq!(
        out.error_type(),
        Some("Bosh::Clouds::VMCreationFailed"),
        "{}",
        out.stdout
    );
    assert_eq!(out.response["error"]["ok_to_retry"], json!(true));
    out.response["error"]["message"]
        .as_str()
        .unwrap_or_default()
}

/// The config drive create_vm gave Ironic for `node` (inline: gzip + base64, as Ironic stored it
/// in its database), decoded back to the ISO image: its bytes, and a copy on disk for isoinfo.
pub fn config_drive(lab: &CpiLab, node: &str) -> (Vec<u8>, tempfile::TempDir, PathBuf) {
    let info = lab.ironic.stored_instance_info(node).unwrap();
    let encoded = info["configdrive"]
        .as_str()
        .unwrap_or_else(|| panic!("node {node} has no inline config drive: {info}"));
    let gz = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap();
    let mut iso = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut iso)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drive.iso");
    std::fs::write(&path, &iso).unwrap();
    (iso, dir, path)
}
