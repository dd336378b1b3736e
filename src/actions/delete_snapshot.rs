//! `delete_snapshot`: local disks of bare-metal nodes have no snapshot facility. The director tolerates
//! NotImplemented here (snapshots are optional).

use crate::error::{CpiError, Result};
use crate::protocol::methods::DeleteSnapshot;

pub fn run(_args: DeleteSnapshot) -> Result<()> {
    Err(CpiError::not_implemented(
        "delete_snapshot: local disks of bare-metal nodes have no snapshots",
    ))
}
