//! `has_vm`: true while the node holds this VM (any phase, a teardown in progress included);
//! false when the node is gone or holds another VM or none.

use crate::error::{self, Result, Stage};
use crate::ironic::Ironic;
use crate::pool::vm::{lookup, parse_cid, Lookup};
use crate::protocol::methods::HasVm;
use crate::services::{Lazy, Notes};

pub fn run(ironic: &Lazy<dyn Ironic>, notes: &Notes, args: HasVm) -> Result<bool> {
    let cid = parse_cid(args.vm_cid.as_str())?;
    match lookup(ironic.get()?, &cid) {
        Ok(Lookup::Held(..)) => Ok(true),
        Ok(Lookup::Gone(why)) => {
            notes.note(format!("VM {cid} is gone: {why}"));
            Ok(false)
        }
        Err(e) => Err(error::from_ironic(
            e,
            Stage::Call,
            &format!("reading the node of VM {cid}"),
        )),
    }
}
