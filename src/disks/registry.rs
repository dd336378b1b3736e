//! In registry mode the agent learns about persistent disks from its registry settings
//! (`disks.persistent`), so attach and detach rewrite that document.

use serde_json::{json, Value};

use crate::error::{CpiError, Result};
use crate::services::{CallRegistry, Notes};

/// Add (`Some(device)`) or remove (`None`) a disk in the registry settings of the VM on node
/// `vm_cid` (the registry key is the node's UUID).
pub fn update_persistent(
    registry: CallRegistry,
    notes: &Notes,
    vm_cid: &str,
    disk_cid: &str,
    device: Option<&str>,
) -> Result<()> {
    let Some(registry) = registry.get()? else {
        return Ok(());
    };
    let Some(mut settings) = registry.get_settings(vm_cid)? else {
        return Err(CpiError::cloud(format!(
            "the registry holds no settings for VM {vm_cid}; cannot tell its agent about disk {disk_cid}"
        )));
    };
    let disks = settings
        .as_object_mut()
        .ok_or_else(|| CpiError::cloud(format!("registry settings of {vm_cid} are not an object")))?
        .entry("disks")
        .or_insert_with(|| json!({}));
    let persistent = disks
        .as_object_mut()
        .ok_or_else(|| {
            CpiError::cloud(format!(
                "registry settings of {vm_cid}: disks is not an object"
            ))
        })?
        .entry("persistent")
        .or_insert_with(|| json!({}));
    let Value::Object(persistent) = persistent else {
        return Err(CpiError::cloud(format!(
            "registry settings of {vm_cid}: disks.persistent is not an object"
        )));
    };
    match device {
        Some(d) => {
            persistent.insert(disk_cid.to_string(), json!({ "path": d }));
        }
        None => {
            persistent.remove(disk_cid);
        }
    }
    registry.put_settings(vm_cid, &settings)?;
    notes.note(format!(
        "registry settings of {vm_cid}: disk {disk_cid} {}",
        if device.is_some() { "added" } else { "removed" }
    ));
    Ok(())
}
