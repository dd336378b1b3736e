//! Enrolling a machine that the pool does not know yet, from a vm_type's `ironic_params` and
//! `macs` (a feature of the original CPI): create the node and its ports, `manage`, `provide`.
//! The node is marked so that delete_vm removes it again.

use serde_json::{json, Map, Value};

use crate::config::IronicConfig;
use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::{wait, Ironic, IronicError, Node};
use crate::pool::record::ENROLLED_KEY;

pub fn enroll(
    api: &dyn Ironic,
    cfg: &IronicConfig,
    params: &Map<String, Value>,
    macs: &[String],
) -> Result<Node> {
    let mut body = params.clone();
    let extra = body
        .entry("extra")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(extra) = extra.as_object_mut() else {
        return Err(CpiError::cloud(
            "cloud_properties.ironic_params.extra must be an object",
        ));
    };
    extra.insert(ENROLLED_KEY.into(), json!(true));

    let node = api.create_node(&Value::Object(body)).map_err(|e| {
        error::from_ironic(
            e,
            Stage::Call,
            &format!("enrolling a node for MACs {macs:?}"),
        )
    })?;
    log::info!("enrolled node {} for MACs {macs:?}", node.label());
    match prepare(api, cfg, &node, macs) {
        Ok(node) => Ok(node),
        Err(e) => {
            // Leave nothing half-enrolled: the node goes, and its ports with it.
            if let Err(del) = api.delete_node(&node.uuid) {
                log::error!(
                    "could not delete half-enrolled node {}: {del}",
                    node.label()
                );
            }
            Err(CpiError::cloud(format!(
                "enrolling node {} for MACs {macs:?}: {e}",
                node.label()
            )))
        }
    }
}

fn prepare(
    api: &dyn Ironic,
    cfg: &IronicConfig,
    node: &Node,
    macs: &[String],
) -> std::result::Result<Node, IronicError> {
    for mac in macs {
        api.create_port(&node.uuid, mac, None)?;
    }
    api.set_provision_state(&node.uuid, "manage", None)?;
    wait::provision_state(
        api,
        &cfg.poll,
        &node.uuid,
        &["manageable"],
        cfg.timeouts.manage.get(),
    )?;
    // A defined power state: Ironic's allocation conductor skips nodes whose power is unknown.
    api.set_power_state(&node.uuid, "power off")?;
    wait::power_state(
        api,
        &cfg.poll,
        &node.uuid,
        "power off",
        cfg.timeouts.power.get(),
    )?;
    api.set_provision_state(&node.uuid, "provide", None)?;
    wait::provision_state(
        api,
        &cfg.poll,
        &node.uuid,
        &["available"],
        cfg.timeouts.provide.get(),
    )
}
