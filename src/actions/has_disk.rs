//! `has_disk`: whether the disk's record exists on its node (checked for real, so cloudcheck
//! can find missing disks).

use crate::disks::cid::DiskCid;
use crate::disks::store;
use crate::error::Result;
use crate::ironic::Ironic;
use crate::protocol::methods::HasDisk;
use crate::services::Lazy;

pub fn run(ironic: &Lazy<dyn Ironic>, args: HasDisk) -> Result<bool> {
    let Some(cid) = DiskCid::parse(args.disk_cid.as_str()) else {
        return Ok(false);
    };
    let located = store::locate(ironic.get()?, &cid)?;
    Ok(located.is_some_and(|l| l.record.is_some()))
}
