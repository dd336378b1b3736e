//! `resize_disk`: a persistent disk is a local disk of a node, so it cannot grow or move. NotSupported
//! makes the director fall back to creating a new disk and copying the data.

use crate::error::{CpiError, Result};
use crate::protocol::methods::ResizeDisk;

pub fn run(_args: ResizeDisk) -> Result<()> {
    Err(CpiError::not_supported(
        "resize_disk: persistent disks are local disks of a node and cannot be resized; \
         the director copies the data to a new disk instead",
    ))
}
