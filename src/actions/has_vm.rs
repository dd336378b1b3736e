//! `has_vm`: true while the node holds this VM (any phase, a teardown in progress included);
//! false when the node is gone or holds another VM or none.

use crate::call::Call;
use crate::error::{self, Result, Stage};
use crate::pool::vm::{lookup, parse_cid, Lookup};
use crate::protocol::methods::HasVm;

pub fn run(call: &Call, args: HasVm) -> Result<bool> {
    let cid = parse_cid(args.vm_cid.as_str())?;
    match lookup(call.ironic()?, &cid) {
        Ok(Lookup::Held(..)) => Ok(true),
        Ok(Lookup::Gone(why)) => {
            call.note(format!("VM {cid} is gone: {why}"));
            Ok(false)
        }
        Err(e) => Err(error::from_ironic(
            e,
            Stage::Call,
            &format!("reading the node of VM {cid}"),
        )),
    }
}
