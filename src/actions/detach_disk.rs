//! `detach_disk`: idempotent on the disk's own node; DiskNotAttached when the disk belongs to
//! another node (the director ignores it for inactive disks and reports it for active ones).

use crate::disks::{registry as registry_settings, store};
use crate::error::{CpiError, Result};
use crate::ironic::Ironic;
use crate::protocol::methods::DetachDisk;
use crate::services::{CallRegistry, Lazy, Notes};

pub fn run(
    ironic: &Lazy<dyn Ironic>,
    registry: CallRegistry,
    notes: &Notes,
    args: DetachDisk,
) -> Result<()> {
    let vm_cid = args.vm_cid.as_str();
    let disk_cid = args.disk_cid.as_str();
    let client = ironic.get()?;
    let (node, vm, located) = store::locate_for_vm(client, vm_cid, disk_cid)?;
    if located.node.uuid != node.uuid {
        return Err(CpiError::disk_not_attached(format!(
            "disk {disk_cid} lives on node {}, not on VM {vm_cid} (node {})",
            located.node.label(),
            node.label()
        )));
    }
    match located.attached_to() {
        Some(id) if id == vm.vm_id => store::set_attached(client, &located, None)?,
        Some(other) => {
            return Err(CpiError::disk_not_attached(format!(
            "disk {disk_cid} is attached to another VM ({other}) on node {}, not to VM {vm_cid}",
            node.label()
        )))
        }
        None => {}
    }
    registry_settings::update_persistent(registry, notes, &node.uuid, disk_cid, None)?;
    notes.note(format!("detached disk {disk_cid} from VM {vm_cid}"));
    Ok(())
}
