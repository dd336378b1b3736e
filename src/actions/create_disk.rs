//! `create_disk`: a persistent disk is a local disk of the VM's node. It is recorded on the node
//! with its size and device; its cid names the node by MAC and the device.

use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::disks::cid::{check_device, DiskCid};
use crate::disks::store;
use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::{Ironic, PortQuery};
use crate::pool::record::disks;
use crate::pool::vm::held;
use crate::protocol::methods::CreateDisk;
use crate::services::{Lazy, Notes};

pub fn run(
    cfg: &Config,
    ironic: &Lazy<dyn Ironic>,
    notes: &Notes,
    args: CreateDisk,
) -> Result<String> {
    let size_mb = args.size;
    let cloud_properties = args.cloud_properties.clone();
    let Some(vm_cid) = args.vm_cid.as_deref() else {
        return Err(CpiError::cloud(
            "create_disk: vm_cid is null; a persistent disk on bare metal is a local disk of a \
             node, so it needs the VM it will belong to",
        ));
    };
    let device = match cloud_properties.get("device") {
        None | Some(Value::Null) => cfg.defaults.persistent_disk_device.clone(),
        Some(Value::String(d)) => d.clone(),
        Some(other) => {
            return Err(CpiError::cloud(format!(
                "create_disk: cloud_properties.device must be a device path, got {other}"
            )))
        }
    };
    check_device(&device)?;
    let client = ironic.get()?;
    let (node, record) = held(client, vm_cid)?;

    if device == cfg.defaults.system_disk {
        return Err(CpiError::cloud(format!(
            "create_disk: device {device} is the system disk of node {}; set the disk type's \
             cloud_properties.device to another local disk",
            node.label()
        )));
    }
    let existing = disks(&node);
    if let Some((other, _)) = existing
        .iter()
        .find(|(_, r)| r.get("device").and_then(Value::as_str) == Some(device.as_str()))
    {
        return Err(CpiError::cloud(format!(
            "create_disk: device {device} of node {} already holds disk {other}; a local disk \
             holds one persistent disk (give the disk type another cloud_properties.device)",
            node.label()
        )));
    }
    if let Some(local_gb) = node.properties.get("local_gb").and_then(number) {
        if size_mb as f64 > local_gb * 1024.0 {
            return Err(CpiError::no_disk_space(format!(
                "disk of {size_mb} MiB does not fit on node {} (local_gb {local_gb})",
                node.uuid
            )));
        }
    }

    let mut ports = client
        .list_ports(&PortQuery {
            node_uuid: Some(node.uuid.clone()),
            fields: vec!["address".into()],
            ..Default::default()
        })
        .map_err(|e| {
            error::from_ironic(
                e,
                Stage::Call,
                &format!("listing ports of node {}", node.label()),
            )
        })?;
    ports.sort_by(|a, b| a.address.cmp(&b.address));
    let mac = ports.first().map(|p| p.address.clone()).ok_or_else(|| {
        CpiError::cloud(format!(
            "node {} has no ports: a disk id names its node by a MAC",
            node.label()
        ))
    })?;
    let cid = DiskCid::new(&mac, &device)?.to_string();
    let mut disk = Map::new();
    disk.insert("size_mb".into(), json!(size_mb));
    disk.insert("device".into(), json!(device));
    disk.insert(
        "created_at".into(),
        json!(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
    );
    disk.insert("metadata".into(), json!({}));
    store::put(client, &node, Some(&record.vm_id), &cid, disk)?;
    notes.note(format!(
        "created disk {cid} ({size_mb} MiB on {device} of node {})",
        node.label()
    ));
    Ok(cid)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
