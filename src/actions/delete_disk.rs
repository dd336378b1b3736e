//! `delete_disk`: forget the disk (DiskNotFound when it is unknown, which the director treats as
//! already gone).

use crate::call::Call;
use crate::disks::store;
use crate::error::Result;
use crate::protocol::methods::DeleteDisk;

pub fn run(call: &Call, args: DeleteDisk) -> Result<()> {
    let cid = args.disk_cid.as_str();
    let client = call.ironic()?;
    let located = store::locate_existing(client, cid)?;
    store::remove(client, &located.node, cid)?;
    call.note(format!(
        "deleted disk {cid} from node {}",
        located.node.label()
    ));
    Ok(())
}
