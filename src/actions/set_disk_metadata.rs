//! `set_disk_metadata`: keep the director's metadata in the disk's record.

use serde_json::Value;

use crate::call::Call;
use crate::disks::store;
use crate::error::Result;
use crate::rpc::Args;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let cid = args.string(0)?;
    let metadata = args.object(1)?;
    let client = call.ironic()?;
    let located = store::locate_existing(client, cid)?;
    let mut record = located.require()?.clone();
    record.insert("metadata".into(), Value::Object(metadata));
    store::put(client, &located.node, None, cid, record)?;
    Ok(Value::Null)
}
