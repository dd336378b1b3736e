//! `has_disk`: whether the disk's record exists on its node (checked for real, so cloudcheck
//! can find missing disks).

use serde_json::{json, Value};

use crate::call::Call;
use crate::disks::cid::DiskCid;
use crate::disks::store;
use crate::error::Result;
use crate::rpc::methods::HasDisk;

pub fn run(call: &Call, args: HasDisk) -> Result<Value> {
    let Some(cid) = DiskCid::parse(args.disk_cid.as_str()) else {
        return Ok(json!(false));
    };
    let located = store::locate(call.ironic()?, &cid)?;
    Ok(json!(located.is_some_and(|l| l.record.is_some())))
}
