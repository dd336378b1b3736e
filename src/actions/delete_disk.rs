//! `delete_disk`: forget the disk (DiskNotFound when it is unknown, which the director treats as
//! already gone).

use serde_json::Value;

use crate::call::Call;
use crate::disks::store;
use crate::error::Result;
use crate::rpc::Args;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let cid = args.string(0)?;
    let client = call.ironic()?;
    let located = store::locate_existing(client, cid)?;
    store::remove(client, &located.node, cid)?;
    call.note(format!(
        "deleted disk {cid} from node {}",
        located.node.label()
    ));
    Ok(Value::Null)
}
