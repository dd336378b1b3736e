//! `set_disk_metadata`: keep the director's metadata in the disk's record.

use serde_json::Value;

use crate::disks::store;
use crate::error::Result;
use crate::ironic::Ironic;
use crate::protocol::methods::SetDiskMetadata;
use crate::services::Lazy;

pub fn run(ironic: &Lazy<dyn Ironic>, args: SetDiskMetadata) -> Result<()> {
    let cid = args.disk_cid.as_str();
    let metadata = args.metadata.clone();
    let client = ironic.get()?;
    let located = store::locate_existing(client, cid)?;
    let mut record = located.require()?.clone();
    record.insert("metadata".into(), Value::Object(metadata));
    store::put(client, &located.node, None, cid, record)?;
    Ok(())
}
