//! Returning a node to the pool as this CPI found it. Used by delete_vm and by create_vm's
//! rollback, so both leave the same state behind:
//!
//! 1. let a running transition finish;
//! 2. undeploy if anything was deployed, and wait for `available` (automated cleaning included);
//! 3. claim the node again (undeploy clears `instance_uuid`), so nobody takes it half-restored;
//! 4. optional manual cleaning;
//! 5. restore the origin state, or delete a node this CPI enrolled;
//! 6. release the claim last.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{secs, IronicConfig};
use crate::error::{CpiError, Result};
use crate::ironic::{IronicClient, IronicError, Node, PatchOp};
use crate::pool::record::{disks, VmRecord};
use crate::pool::record::{enrolled_by_cpi, DISKS_KEY, INSTANCE_INFO_KEYS, METADATA_KEY, VM_KEY};

/// States in which something is (or was being) deployed and `deleted` must run.
const DEPLOYED_STATES: [&str; 5] = [
    "active",
    "deploy failed",
    "error",
    "wait call-back",
    "rescue",
];

/// States where a transition has settled.
const STABLE_STATES: [&str; 9] = [
    "active",
    "available",
    "manageable",
    "enroll",
    "deploy failed",
    "clean failed",
    "error",
    "wait call-back",
    "rescue",
];

pub struct Teardown<'a> {
    pub client: &'a IronicClient,
    pub ironic: &'a IronicConfig,
    pub clean: bool,
}

/// What happened, for the caller's log.
#[derive(Debug, Default)]
pub struct TeardownReport {
    pub steps: Vec<String>,
}

impl Teardown<'_> {
    /// Return the node held under `record`. A node that is gone, or that someone else holds by
    /// now, is left alone.
    pub fn run(&self, node_uuid: &str, record: &VmRecord) -> Result<TeardownReport> {
        let mut report = TeardownReport::default();
        let Some(mut node) = self.get(node_uuid)? else {
            report.steps.push(format!("node {node_uuid} is gone"));
            return Ok(report);
        };
        if !holds(&node, record) {
            report.steps.push(format!(
                "node {} is no longer held by this VM",
                node.label()
            ));
            return Ok(report);
        }

        if node.target_provision_state.is_some() {
            node = self.settle(&node)?;
        }
        // An undeploy that ran without us cleared the claim: take it back before going on.
        if node.instance_uuid.is_none() {
            match self.reclaim(&node, record)? {
                Some(n) => node = n,
                None => {
                    report.steps.push(format!(
                        "node {} was taken by another consumer",
                        node.label()
                    ));
                    return Ok(report);
                }
            }
        }

        if DEPLOYED_STATES.contains(&node.state()) {
            let from = node.state().to_string();
            self.action(&node, "deleted", None)?;
            node = self.wait(&node, "available", secs(self.ironic.timeouts.undeploy))?;
            report
                .steps
                .push(format!("undeployed node {} from {from}", node.label()));
            // Undeploy cleared instance_uuid: claim again before touching the node further.
            match self.reclaim(&node, record)? {
                Some(n) => node = n,
                None => {
                    report.steps.push(format!(
                        "node {} was taken by another consumer right after undeploy",
                        node.label()
                    ));
                    return Ok(report);
                }
            }
        }

        let enrolled = enrolled_by_cpi(&node);
        if self.clean && !enrolled {
            node = self.manual_clean(node)?;
            report.steps.push(format!("cleaned node {}", node.label()));
        }

        if enrolled {
            self.delete_enrolled(&node)?;
            report.steps.push(format!(
                "deleted node {} (it was enrolled by create_vm)",
                node.label()
            ));
            return Ok(report);
        }

        node = self.restore_state(node, &record.origin_state)?;
        self.release(&node, record)?;
        report.steps.push(format!(
            "released node {} in state {}",
            node.label(),
            node.state()
        ));
        Ok(report)
    }

    fn get(&self, uuid: &str) -> Result<Option<Node>> {
        match self.client.get_node(uuid) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(cloud(e, "reading the node")),
        }
    }

    /// Wait for a running transition to end, whatever state it ends in.
    fn settle(&self, node: &Node) -> Result<Node> {
        log::info!(
            "node {}: waiting for {} -> {} to finish",
            node.label(),
            node.state(),
            node.target_provision_state.as_deref().unwrap_or("?")
        );
        match self.client.wait_for_provision_state(
            &node.uuid,
            &STABLE_STATES,
            // Whatever is running (a deploy or an undeploy) may take the longer of the two.
            secs(
                self.ironic
                    .timeouts
                    .deploy
                    .max(self.ironic.timeouts.undeploy),
            ),
        ) {
            Ok(n) => Ok(n),
            // A failed state is settled too: the undeploy below deals with it.
            Err(IronicError::WaitFailed { .. }) => self
                .get(&node.uuid)?
                .ok_or_else(|| CpiError::cloud(format!("node {} vanished", node.uuid))),
            Err(e) => Err(cloud(e, "waiting for the node to settle")),
        }
    }

    fn action(&self, node: &Node, target: &str, body: Option<Value>) -> Result<()> {
        log::info!("node {}: provision action '{target}'", node.label());
        self.client
            .set_provision_state(&node.uuid, target, body)
            .map_err(|e| cloud(e, &format!("'{target}' on node {}", node.label())))
    }

    fn wait(&self, node: &Node, target: &str, timeout: Duration) -> Result<Node> {
        self.client
            .wait_for_provision_state(&node.uuid, &[target], timeout)
            .map_err(|e| cloud(e, &format!("returning node {} to the pool", node.label())))
    }

    /// The node as claimed again, or None when someone else was faster.
    fn reclaim(&self, node: &Node, record: &VmRecord) -> Result<Option<Node>> {
        let ops = [PatchOp::add("/instance_uuid", json!(record.instance_uuid))];
        match self.client.patch_node(&node.uuid, &ops) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.is_final_conflict() => Ok(None),
            Err(e) => Err(cloud(e, "claiming the node again after undeploy")),
        }
    }

    fn manual_clean(&self, mut node: Node) -> Result<Node> {
        // Manual cleaning starts from manageable; `manage` also recovers a node whose earlier
        // cleaning failed, so a retried delete_vm can clean again.
        if node.state() != "manageable" {
            self.action(&node, "manage", None)?;
            node = self.wait(&node, "manageable", secs(self.ironic.timeouts.manage))?;
        }
        let steps = json!({ "clean_steps": self.ironic.clean_steps });
        self.action(&node, "clean", Some(steps))?;
        self.wait(&node, "manageable", secs(self.ironic.timeouts.clean))
    }

    fn restore_state(&self, node: Node, origin: &str) -> Result<Node> {
        match (node.state(), origin) {
            ("available", "manageable") => {
                self.action(&node, "manage", None)?;
                self.wait(&node, "manageable", secs(self.ironic.timeouts.manage))
            }
            ("manageable", "available") => {
                self.action(&node, "provide", None)?;
                self.wait(&node, "available", secs(self.ironic.timeouts.provide))
            }
            _ => Ok(node),
        }
    }

    /// Nodes enrolled by create_vm leave with their VM. Power off first and wait for it: a node
    /// deleted while powered on keeps running unmanaged.
    fn delete_enrolled(&self, node: &Node) -> Result<()> {
        if node.power_state.as_deref() != Some("power off") {
            self.client
                .set_power_state(&node.uuid, "power off")
                .map_err(|e| cloud(e, "powering off the enrolled node"))?;
            self.client
                .wait_for_power_state(&node.uuid, "power off", secs(self.ironic.timeouts.power))
                .map_err(|e| cloud(e, "powering off the enrolled node"))?;
        }
        // Ironic refuses to delete a node that is associated with an instance.
        if node.instance_uuid.is_some() {
            self.client
                .patch_node(&node.uuid, &[PatchOp::remove("/instance_uuid")])
                .map_err(|e| cloud(e, "releasing the enrolled node before deleting it"))?;
        }
        match self.client.delete_node(&node.uuid) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(cloud(e, "deleting the enrolled node")),
        }
    }

    /// Drop everything create_vm and set_vm_metadata wrote, then the claim. Persistent disk
    /// records stay, detached.
    fn release(&self, node: &Node, record: &VmRecord) -> Result<()> {
        if node.name != record.origin_name {
            let op = match &record.origin_name {
                Some(name) => PatchOp::add("/name", json!(name)),
                None => PatchOp::remove("/name"),
            };
            // A name is cosmetic: never keep a node out of the pool over it.
            if let Err(e) = self.client.patch_node(&node.uuid, &[op]) {
                log::warn!("node {}: could not restore its name: {e}", node.label());
            }
        }
        let mut ops: Vec<PatchOp> = INSTANCE_INFO_KEYS
            .iter()
            .filter(|k| node.instance_info.contains_key(**k))
            .map(|k| PatchOp::remove(format!("/instance_info/{k}")))
            .collect();
        for key in [VM_KEY, METADATA_KEY] {
            if node.extra.contains_key(key) {
                ops.push(PatchOp::remove(format!("/extra/{key}")));
            }
        }
        let mut records = disks(node);
        if records.values().any(|d| d["attached"] == json!(true)) {
            for d in records.values_mut() {
                if let Some(obj) = d.as_object_mut() {
                    obj.insert("attached".into(), json!(false));
                }
            }
            ops.push(PatchOp::add(
                format!("/extra/{DISKS_KEY}"),
                Value::Object(records),
            ));
        }
        if node.instance_uuid.is_some() {
            // Last, in the same request: the node becomes free only once it is clean.
            ops.push(PatchOp::remove("/instance_uuid"));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.client
            .patch_node(&node.uuid, &ops)
            .map(drop)
            .map_err(|e| cloud(e, &format!("releasing node {}", node.label())))
    }
}

fn holds(node: &Node, record: &VmRecord) -> bool {
    // After an undeploy that finished without us, instance_uuid is empty but the record stays.
    match node.instance_uuid.as_deref() {
        Some(u) => u == record.instance_uuid,
        None => VmRecord::read(node).is_some_and(|r| r.instance_uuid == record.instance_uuid),
    }
}

fn cloud(e: IronicError, what: &str) -> CpiError {
    CpiError::cloud(format!("{what}: {e}"))
}
