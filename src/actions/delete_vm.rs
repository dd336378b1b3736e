//! `delete_vm`: undeploy the node and give it back to the pool as it was found. Idempotent: a
//! node that is gone, or no longer holds this VM, is success.

use serde_json::Value;

use crate::call::Call;
use crate::error::{CpiError, Result};
use crate::pool::record::VmRecord;
use crate::pool::teardown::Teardown;
use crate::rpc::Args;
use crate::vm_data;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let vm_cid = args.string(0)?;
    let cfg = call.config()?;
    let client = call.ironic()?;
    let node = match client.get_node(vm_cid) {
        Ok(node) => node,
        Err(e) if e.is_not_found() => {
            call.note(format!("node {vm_cid} does not exist: nothing to delete"));
            return Ok(Value::Null);
        }
        Err(e) => return Err(CpiError::cloud(format!("reading node {vm_cid}: {e}"))),
    };
    let Some(record) = VmRecord::read(&node) else {
        call.note(format!(
            "node {} holds no VM of this CPI (no extra.bosh_vm): left alone",
            node.label()
        ));
        return Ok(Value::Null);
    };
    // Before the release: once released, another VM may write under the same node's keys.
    vm_data::remove(call, &node.uuid);
    let clean = cfg.ironic.clean_on_delete;
    let teardown = Teardown {
        client,
        ironic: &cfg.ironic,
        clean,
    };
    let report = teardown
        .run(&node.uuid, &record)
        .map_err(|e| e.context(format!("delete_vm {}", node.label())))?;
    for step in report.steps {
        call.note(step);
    }
    Ok(Value::Null)
}
