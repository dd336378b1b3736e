//! `reboot_vm`: power-cycle the node and wait until it is powered on again.

use crate::config::Config;
use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::{wait, Ironic};
use crate::pool::vm::held;
use crate::protocol::methods::RebootVm;
use crate::services::{Lazy, Notes};

pub fn run(cfg: &Config, ironic: &Lazy<dyn Ironic>, notes: &Notes, args: RebootVm) -> Result<()> {
    let vm_cid = args.vm_cid.as_str();
    let client = ironic.get()?;
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
        .map_err(|e| {
            error::from_ironic(e, Stage::Call, &format!("rebooting node {}", node.label()))
        })?;
    wait::power_state(
        client,
        &cfg.ironic.poll,
        &node.uuid,
        "power on",
        cfg.ironic.timeouts.power.get(),
    )
    .map_err(|e| error::from_ironic(e, Stage::Call, &format!("rebooting node {}", node.label())))?;
    notes.note(format!(
        "rebooted node {} in {:.1} s",
        node.label(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
