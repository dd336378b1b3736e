//! `attach_disk`: a disk can only be attached on the node it lives on. API v2 answers the device
//! hint; in registry mode the agent's registry settings get the disk too.

use crate::disks::{registry as registry_settings, store};
use crate::error::{CpiError, Result};
use crate::ironic::Ironic;
use crate::protocol::methods::{AttachDisk, DiskHint};
use crate::services::{CallRegistry, Lazy, Notes};

pub fn run(
    ironic: &Lazy<dyn Ironic>,
    registry: CallRegistry,
    notes: &Notes,
    api_version: u32,
    args: AttachDisk,
) -> Result<Option<DiskHint>> {
    let vm_cid = args.vm_cid.as_str();
    let disk_cid = args.disk_cid.as_str();
    let client = ironic.get()?;
    let (node, vm, located) = store::locate_for_vm(client, vm_cid, disk_cid)?;
    if located.node.uuid != node.uuid {
        return Err(CpiError::cloud(format!(
            "disk {disk_cid} is a local disk of node {} and cannot be attached to VM {vm_cid} \
             on node {}: local disks do not move between machines",
            located.node.label(),
            node.label()
        )));
    }
    let device = located.cid.device.clone();
    store::set_attached(client, &located, Some(&vm.vm_id))?;
    registry_settings::update_persistent(registry, notes, &node.uuid, disk_cid, Some(&device))?;
    notes.note(format!(
        "attached disk {disk_cid} ({device}) to VM {vm_cid}"
    ));
    if api_version >= 2 {
        Ok(Some(DiskHint::path(&device)))
    } else {
        Ok(None)
    }
}
