//! `set_disk_metadata`: keep the director's metadata in the disk's record.

use serde_json::Value;

use crate::call::Call;
use crate::disks::store;
use crate::error::Result;
use crate::protocol::methods::SetDiskMetadata;

pub fn run(call: &Call, args: SetDiskMetadata) -> Result<()> {
    let cid = args.disk_cid.as_str();
    let metadata = args.metadata.clone();
    let client = call.ironic()?;
    let located = store::locate_existing(client, cid)?;
    let mut record = located.require()?.clone();
    record.insert("metadata".into(), Value::Object(metadata));
    store::put(client, &located.node, None, cid, record)?;
    Ok(())
}
