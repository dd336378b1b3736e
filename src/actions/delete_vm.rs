//! `delete_vm`: return the VM's node to the pool as it was found (`pool::teardown`). A VM that
//! is gone (no node, or a node that holds another VM or none) is success, and nothing is
//! touched: a late or repeated delete_vm never reaches the VM that holds the node now.

use serde_json::Value;

use crate::call::Call;
use crate::error::Result;
use crate::pool::teardown::Teardown;
use crate::pool::vm::{lookup, parse_cid, Lookup};
use crate::rpc::Args;
use crate::vm_data;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let cid = parse_cid(args.string(0)?)?;
    let cfg = call.config()?;
    let api = call.ironic()?;
    // Files outside Ironic are keyed by node: only the VM's own teardown may remove them, and
    // only before its record goes (after that, another VM may own them).
    if let Lookup::Held(node, _) = lookup(api, &cid).map_err(crate::CpiError::from)? {
        vm_data::remove(call, &node.uuid);
    }
    let teardown = Teardown {
        api,
        ironic: &cfg.ironic,
        me: call.process(),
        may_drop_vm_claim: false,
        force: false,
    };
    let report = teardown
        .run(&cid)
        .map_err(|e| e.context(format!("delete_vm {cid}")))?;
    for step in report.steps {
        call.note(step);
    }
    Ok(Value::Null)
}
