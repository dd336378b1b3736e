//! Returning a VM's node to the pool as this CPI found it. delete_vm, create_vm's rollback and
//! `ironic_cpi free` all run this, so all leave the same state behind:
//!
//! 1. take hold of the node: a running transition is let finish, and the VM's claim is found
//!    in place, or this process's own token is set (after undeploy cleared the claim); another
//!    teardown of the same VM that is still running is waited for instead of raced;
//! 2. mark the record `deleting`;
//! 3. undeploy if anything was deployed, and wait for `available` (automated cleaning
//!    included); then hold the node with this process's token again;
//! 4. optional manual cleaning;
//! 5. restore the origin state, or delete a node this CPI enrolled;
//! 6. restore the name, then remove the record, the metadata and the token in one request.
//!
//! The record stays until step 6, so at no point can another create_vm take the node: a claim
//! that lands between undeploy and step 3 sees the record and lets go at once. Every write of
//! this module carries `add /instance_uuid <what we hold>`, so Ironic refuses it if anybody else
//! holds the node by then. docs/ownership.md has the reasoning.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{secs, IronicConfig};
use crate::error::{CpiError, Result};
use crate::ironic::{wait, Ironic, IronicError, Node, PatchOp};
use crate::pool::confirm::{self, read_back};
use crate::pool::record::{
    disks, enrolled_by_cpi, timestamp, Phase, TeardownMark, VmRecord, DISKS_KEY,
    INSTANCE_INFO_KEYS, METADATA_KEY, VM_KEY,
};
use crate::pool::vm::{lookup, Lookup};
use crate::pool::vm_cid::VmCid;
use crate::pool::whoami::{Liveness, LivenessCheck, Process};

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

/// How long to wait for a stranger's `instance_uuid` to go (a create_vm that claimed the node
/// from a stale listing lets go within a request or two once it sees the record).
const STRANGER_PATIENCE: Duration = Duration::from_secs(120);

pub struct Teardown<'a> {
    pub api: &'a dyn Ironic,
    pub ironic: &'a IronicConfig,
    pub me: Process,
    /// create_vm's own rollback and `ironic_cpi free`: this process may remove the VM's own
    /// claim from a node on which nothing is deployed (undeploy does it otherwise). delete_vm
    /// may not: a director only knows VMs that were deployed.
    pub may_drop_vm_claim: bool,
    /// `ironic_cpi free --force`: take over from another teardown of this VM even when its
    /// process may still run.
    pub force: bool,
    /// Whether the process of another teardown still runs (`whoami::on_this_host`).
    pub liveness: &'a LivenessCheck,
}

/// What happened, for the caller's log.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<String>,
}

/// What the node's `instance_uuid` is to this teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grip {
    /// The VM's own claim (deployed, or a claim this process may drop).
    VmClaim,
    /// This process's token.
    Token,
}

impl Teardown<'_> {
    /// Return the node of VM `cid`. A VM that is gone (no node, or a node that holds another VM
    /// or none) is success without touching anything.
    pub fn run(&self, cid: &VmCid) -> Result<Report> {
        let mut report = Report::default();
        let token = uuid::Uuid::now_v7().to_string();

        let Some((mut node, record, grip)) = self.take(cid, &token, &mut report)? else {
            return Ok(report);
        };
        let record = if grip == Grip::VmClaim && record.phase != Phase::Deleting {
            let marked = record.in_phase(Phase::Deleting);
            node = self.write_record(&node, &record.vm_id, &marked)?;
            marked
        } else {
            record
        };

        if DEPLOYED_STATES.contains(&node.state()) {
            let from = node.state().to_string();
            self.action(&node, "deleted", None)?;
            self.wait(&node, "available", self.ironic.timeouts.undeploy)?;
            report
                .steps
                .push(format!("undeployed node {} from {from}", node.label()));
        } else if grip == Grip::VmClaim {
            // Nothing deployed, so nothing clears the claim for us: swap it for our token.
            self.drop_vm_claim(&node, &record.vm_id)?;
        }
        let Some((held, record, Grip::Token)) = self.take(cid, &token, &mut report)? else {
            report.steps.push(format!(
                "VM {cid} was released by another teardown meanwhile"
            ));
            return Ok(report);
        };
        node = held;

        if node.state() == "clean failed" {
            // A cleaning that failed earlier (a previous attempt) leaves the node stuck until
            // `manage`; from manageable the origin state can be restored.
            self.action(&node, "manage", None)?;
            node = self.wait(&node, "manageable", self.ironic.timeouts.manage)?;
        }

        let enrolled = enrolled_by_cpi(&node);
        if record.clean_on_delete && !enrolled {
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
        self.restore_name(&node, &record, &token);
        self.release(&node, &record)?;
        report.steps.push(format!(
            "released node {} in state {}",
            node.label(),
            node.state()
        ));
        Ok(report)
    }

    /// Hold the node for this teardown, or learn that the VM is gone. Waits out transitions, a
    /// stranger's short-lived claim, and another live teardown of the same VM (which finishes
    /// the job: then the VM is gone).
    fn take(
        &self,
        cid: &VmCid,
        token: &str,
        report: &mut Report,
    ) -> Result<Option<(Node, VmRecord, Grip)>> {
        let started = self.api.now();
        let mut delay = Duration::from_millis(250);
        let mut waiting_for: Option<String> = None;
        loop {
            let (node, record) =
                match lookup(self.api, cid).map_err(|e| fail(e, "reading the node"))? {
                    Lookup::Held(node, record) => (*node, *record),
                    Lookup::Gone(why) => {
                        report.steps.push(format!("VM {cid} is gone: {why}"));
                        return Ok(None);
                    }
                };
            if node.target_provision_state.is_some() {
                self.settle(&node)?;
                continue;
            }
            let other = match node.instance_uuid.as_deref() {
                Some(u) if u == token => return Ok(Some((node, record, Grip::Token))),
                Some(u) if u == record.vm_id => {
                    if DEPLOYED_STATES.contains(&node.state()) || self.may_drop_vm_claim {
                        return Ok(Some((node, record, Grip::VmClaim)));
                    }
                    return Err(CpiError::cloud(format!(
                        "node {} holds the claim of VM {cid} but nothing is deployed on it \
                         (state {}, record phase {}): the create_vm that made it may still be \
                         running. `ironic_cpi pool` shows whether the claim is stale, and \
                         `ironic_cpi free {}` returns the node once it is",
                        node.label(),
                        node.state(),
                        record.phase.as_str(),
                        node.uuid
                    )));
                }
                Some(u) => u.to_string(),
                None => {
                    // Free to hold: set our token, and say so in the record, in one request.
                    let marked = VmRecord {
                        phase: Phase::Deleting,
                        updated_at: timestamp(std::time::SystemTime::now()),
                        teardown: Some(TeardownMark {
                            token: token.to_string(),
                            by: self.me.clone(),
                            started_at: timestamp(std::time::SystemTime::now()),
                        }),
                        ..record.clone()
                    };
                    match self.try_write_record(&node, token, &marked) {
                        Ok(_) => continue,
                        Err(e) if e.is_final_conflict() => continue,
                        Err(e) => return Err(fail(e, "holding the node for the teardown")),
                    }
                }
            };

            // Someone else holds the node's instance_uuid.
            let mark = record.teardown.as_ref().filter(|m| m.token == other);
            if let Some(mark) = mark {
                let dead = (self.liveness)(&mark.by) == Liveness::Exited;
                if dead || self.force {
                    log::warn!(
                        "node {}: taking over the teardown of VM {cid} from {} ({})",
                        node.label(),
                        mark.by.describe(),
                        if dead { "it has exited" } else { "forced" }
                    );
                    self.drop_claim(&node, &other)?;
                    continue;
                }
                let what = format!("the teardown of VM {cid} by {}", mark.by.describe());
                if waiting_for.as_deref() != Some(&what) {
                    log::info!("node {}: waiting for {what} to finish", node.label());
                    waiting_for = Some(what);
                }
                // As long as a whole teardown may take.
                let patience = secs(self.ironic.timeouts.undeploy)
                    + secs(self.ironic.timeouts.clean)
                    + secs(self.ironic.timeouts.provide);
                if self.api.now() - started > patience {
                    return Err(CpiError::cloud(format!(
                        "node {}: {} has not finished after {:.0} s; if that process is gone, \
                         `ironic_cpi free {}` takes over",
                        node.label(),
                        waiting_for.unwrap_or_default(),
                        patience.as_secs_f64(),
                        node.uuid
                    )));
                }
            } else if self.api.now() - started > STRANGER_PATIENCE {
                return Err(CpiError::cloud(format!(
                    "node {} of VM {cid} is held by instance_uuid {other}, which is neither this \
                     VM nor one of its teardowns, and was not let go within {:.0} s: another \
                     user of Ironic may have taken the node",
                    node.label(),
                    STRANGER_PATIENCE.as_secs_f64()
                )));
            }
            self.api.sleep(delay);
            delay = (delay * 2).min(secs(self.ironic.poll.max_interval.max(0.25)));
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
        let timeout = self
            .ironic
            .timeouts
            .deploy
            .max(self.ironic.timeouts.undeploy);
        match wait::provision_state(
            self.api,
            &self.ironic.poll,
            &node.uuid,
            &STABLE_STATES,
            secs(timeout),
        ) {
            Ok(n) => Ok(n),
            // A failed state is settled too: the steps after this deal with it.
            Err(IronicError::WaitFailed { .. }) => {
                read_back(self.api, &node.uuid).map_err(|e| fail(e, "reading the node"))
            }
            Err(e) => Err(fail(e, "waiting for the node to settle")),
        }
    }

    /// Write `record` while holding `hold` (the VM's claim or our token).
    fn write_record(&self, node: &Node, hold: &str, record: &VmRecord) -> Result<Node> {
        let uuid = node.uuid.as_str();
        let ops = record_ops(hold, record);
        confirm::change(
            self.api,
            uuid,
            "updating the VM record",
            || self.api.patch_node(uuid, &ops),
            |n| {
                VmRecord::read(n).as_ref() == Some(record)
                    && n.instance_uuid.as_deref() == Some(hold)
            },
        )
        .map(|c| match c {
            confirm::Confirmed::Answered(n) => n,
            confirm::Confirmed::ReadBack(n) => *n,
        })
        .map_err(|e| {
            fail(
                e,
                &format!("updating the VM record on node {}", node.label()),
            )
        })
    }

    /// Like `write_record`, but a final conflict is returned for the caller to judge.
    fn try_write_record(
        &self,
        node: &Node,
        hold: &str,
        record: &VmRecord,
    ) -> std::result::Result<Node, IronicError> {
        let uuid = node.uuid.as_str();
        let ops = record_ops(hold, record);
        confirm::change(
            self.api,
            uuid,
            "holding the node",
            || self.api.patch_node(uuid, &ops),
            |n| n.instance_uuid.as_deref() == Some(hold),
        )
        .map(|c| match c {
            confirm::Confirmed::Answered(n) => n,
            confirm::Confirmed::ReadBack(n) => *n,
        })
    }

    /// Remove the VM's own claim from a node on which nothing is deployed.
    fn drop_vm_claim(&self, node: &Node, vm_id: &str) -> Result<()> {
        self.drop_claim(node, vm_id)
    }

    /// Remove `value` from the node's instance_uuid (the VM's claim, or a dead teardown's token).
    fn drop_claim(&self, node: &Node, value: &str) -> Result<()> {
        let uuid = node.uuid.as_str();
        let ops = [PatchOp::remove("/instance_uuid")];
        confirm::change(
            self.api,
            uuid,
            "removing a claim",
            || self.api.patch_node(uuid, &ops),
            |n| n.instance_uuid.as_deref() != Some(value),
        )
        .map(drop)
        .map_err(|e| fail(e, &format!("removing the claim on node {}", node.label())))
    }

    /// A provision action; a lost answer is judged by what the node shows.
    fn action(&self, node: &Node, target: &str, body: Option<Value>) -> Result<()> {
        log::info!("node {}: provision action '{target}'", node.label());
        let uuid = node.uuid.as_str();
        let from = node.state().to_string();
        confirm::change(
            self.api,
            uuid,
            target,
            || self.api.set_provision_state(uuid, target, body.clone()),
            |n| action_happened(target, &from, n),
        )
        .map(drop)
        .map_err(|e| fail(e, &format!("'{target}' on node {}", node.label())))
    }

    fn wait(&self, node: &Node, target: &str, timeout: f64) -> Result<Node> {
        wait::provision_state(
            self.api,
            &self.ironic.poll,
            &node.uuid,
            &[target],
            secs(timeout),
        )
        .map_err(|e| fail(e, &format!("returning node {} to the pool", node.label())))
    }

    fn manual_clean(&self, mut node: Node) -> Result<Node> {
        // Manual cleaning starts from manageable.
        if node.state() != "manageable" {
            self.action(&node, "manage", None)?;
            node = self.wait(&node, "manageable", self.ironic.timeouts.manage)?;
        }
        let steps = json!({ "clean_steps": self.ironic.clean_steps });
        self.action(&node, "clean", Some(steps))?;
        self.wait(&node, "manageable", self.ironic.timeouts.clean)
    }

    fn restore_state(&self, node: Node, origin: &str) -> Result<Node> {
        match (node.state(), origin) {
            ("available", "manageable") => {
                self.action(&node, "manage", None)?;
                self.wait(&node, "manageable", self.ironic.timeouts.manage)
            }
            ("manageable", "available") => {
                self.action(&node, "provide", None)?;
                self.wait(&node, "available", self.ironic.timeouts.provide)
            }
            _ => Ok(node),
        }
    }

    /// Nodes enrolled by create_vm leave with their VM. Power off first and wait for it: a node
    /// deleted while powered on keeps running unmanaged.
    fn delete_enrolled(&self, node: &Node) -> Result<()> {
        if node.power_state.as_deref() != Some("power off") {
            self.api
                .set_power_state(&node.uuid, "power off")
                .map_err(|e| fail(e, "powering off the enrolled node"))?;
            wait::power_state(
                self.api,
                &self.ironic.poll,
                &node.uuid,
                "power off",
                secs(self.ironic.timeouts.power),
            )
            .map_err(|e| fail(e, "powering off the enrolled node"))?;
        }
        // Ironic refuses to delete a node that is associated with an instance (our token).
        let ops = [PatchOp::remove("/instance_uuid")];
        if node.instance_uuid.is_some() {
            self.api
                .patch_node(&node.uuid, &ops)
                .map_err(|e| fail(e, "releasing the enrolled node before deleting it"))?;
        }
        match self.api.delete_node(&node.uuid) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.maybe_applied() => match self.api.get_node(&node.uuid) {
                Err(gone) if gone.is_not_found() => Ok(()),
                _ => Err(fail(e, "deleting the enrolled node")),
            },
            Err(e) => Err(fail(e, "deleting the enrolled node")),
        }
    }

    /// The name set_vm_metadata gave the node goes back to what it was. A name is cosmetic:
    /// never keep a node out of the pool over it.
    fn restore_name(&self, node: &Node, record: &VmRecord, token: &str) {
        if node.name == record.origin_name {
            return;
        }
        let name = match &record.origin_name {
            Some(name) => PatchOp::add("/name", json!(name)),
            None => PatchOp::remove("/name"),
        };
        let ops = [PatchOp::add("/instance_uuid", json!(token)), name];
        if let Err(e) = self.api.patch_node(&node.uuid, &ops) {
            log::warn!("node {}: could not restore its name: {e}", node.label());
        }
    }

    /// Drop everything create_vm and set_vm_metadata wrote, detach the VM's disks, and release
    /// the node, in one request: the node becomes free only once it is clean.
    /// Nobody else wrote the node since our token was set, so `node` is what Ironic holds.
    fn release(&self, node: &Node, record: &VmRecord) -> Result<()> {
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
        let mut detached = false;
        for d in records.values_mut() {
            if let Some(obj) = d.as_object_mut() {
                if obj.get("attached_to").and_then(Value::as_str) == Some(record.vm_id.as_str()) {
                    obj.remove("attached_to");
                    detached = true;
                }
            }
        }
        if detached {
            ops.push(PatchOp::add(
                format!("/extra/{DISKS_KEY}"),
                Value::Object(records),
            ));
        }
        ops.push(PatchOp::remove("/instance_uuid"));
        let uuid = node.uuid.as_str();
        let vm_id = record.vm_id.as_str();
        confirm::change(
            self.api,
            uuid,
            "releasing the node",
            || self.api.patch_node(uuid, &ops),
            |n| VmRecord::read(n).is_none_or(|r| r.vm_id != vm_id),
        )
        .map(drop)
        .map_err(|e| fail(e, &format!("releasing node {}", node.label())))
    }
}

/// delete_vm: the VM's files outside Ironic (`remove_files`, by node) go first, while the node
/// is still the VM's, then the node. A VM that is gone is success, and nothing is touched.
pub fn delete_vm(teardown: &Teardown, cid: &VmCid, remove_files: &dyn Fn(&str)) -> Result<Report> {
    match lookup(teardown.api, cid).map_err(|e| fail(e, "reading the node"))? {
        Lookup::Held(node, _) => remove_files(&node.uuid),
        Lookup::Gone(why) => {
            return Ok(Report {
                steps: vec![format!("VM {cid} is gone: {why}; nothing to do")],
            })
        }
    }
    teardown.run(cid)
}

/// `add /instance_uuid <hold>` (a guard: refused if another holds the node) and the record.
fn record_ops(hold: &str, record: &VmRecord) -> [PatchOp; 2] {
    [
        PatchOp::add("/instance_uuid", json!(hold)),
        PatchOp::add(format!("/extra/{VM_KEY}"), record.to_value()),
    ]
}

/// Whether a provision action whose answer was lost shows on the node.
pub fn action_happened(target: &str, from: &str, n: &Node) -> bool {
    let state = n.state();
    let heading = n.target_provision_state.as_deref();
    match target {
        "deleted" => {
            heading == Some("available")
                || matches!(
                    state,
                    "deleting" | "cleaning" | "clean wait" | "clean failed"
                )
                || (state == "available" && from != "available")
        }
        "provide" => {
            heading == Some("available")
                || matches!(state, "cleaning" | "clean wait" | "clean failed")
                || (state == "available" && from != "available")
        }
        "manage" => heading == Some("manageable") || matches!(state, "manageable" | "verifying"),
        "clean" => heading == Some("manageable") || matches!(state, "cleaning" | "clean wait"),
        "active" => {
            heading == Some("active")
                || matches!(
                    state,
                    "deploying" | "wait call-back" | "active" | "deploy failed"
                )
        }
        _ => false,
    }
}

fn fail(e: IronicError, what: &str) -> CpiError {
    CpiError::from(e).context(what)
}
