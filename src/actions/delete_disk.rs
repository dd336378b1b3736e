//! `delete_disk`: forget the disk (DiskNotFound when it is unknown, which the director treats as
//! already gone).

use crate::disks::store;
use crate::error::Result;
use crate::ironic::Ironic;
use crate::protocol::methods::DeleteDisk;
use crate::services::{Lazy, Notes};

pub fn run(ironic: &Lazy<dyn Ironic>, notes: &Notes, args: DeleteDisk) -> Result<()> {
    let cid = args.disk_cid.as_str();
    let client = ironic.get()?;
    let located = store::locate_existing(client, cid)?;
    store::remove(client, &located.node, cid)?;
    notes.note(format!(
        "deleted disk {cid} from node {}",
        located.node.label()
    ));
    Ok(())
}
