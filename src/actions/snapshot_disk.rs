//! `snapshot_disk`: local disks of bare-metal nodes have no snapshot facility. The director tolerates
//! NotImplemented here (snapshots are optional).

use crate::error::{CpiError, Result};
use crate::protocol::methods::SnapshotDisk;

pub fn run(_args: SnapshotDisk) -> Result<String> {
    Err(CpiError::not_implemented(
        "snapshot_disk: local disks of bare-metal nodes have no snapshots",
    ))
}
