//! `reboot_vm`: power-cycle the node and wait until it is powered on again.

use crate::call::Call;
use crate::error::{CpiError, Result};
use crate::ironic::wait;
use crate::pool::vm::held;
use crate::protocol::methods::RebootVm;

pub fn run(call: &Call, args: RebootVm) -> Result<()> {
    let vm_cid = args.vm_cid.as_str();
    let cfg = call.config()?;
    let client = call.ironic()?;
    let (node, _) = held(client, vm_cid)?;
    if node.state() != "active" {
        return Err(CpiError::cloud(format!(
            "node {} is in provision state '{}', not 'active': it holds no running VM to reboot",
            node.label(),
            node.state()
        )));
    }
    let started = std::time::Instant::now();
    client
        .set_power_state(&node.uuid, "rebooting")
        .map_err(|e| CpiError::cloud(format!("rebooting node {}: {e}", node.label())))?;
    wait::power_state(
        client,
        &cfg.ironic.poll,
        &node.uuid,
        "power on",
        cfg.ironic.timeouts.power.get(),
    )
    .map_err(|e| CpiError::cloud(format!("rebooting node {}: {e}", node.label())))?;
    call.note(format!(
        "rebooted node {} in {:.1} s",
        node.label(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
