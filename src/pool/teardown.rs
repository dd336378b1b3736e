//! Returning a VM's node to the pool as this CPI found it. delete_vm, create_vm's rollback and
//! `ironic_cpi free` all run this, so all leave the same state behind:
//!
//! 1. find the VM's record (none: the VM is gone, nothing is touched); let a running transition
//!    finish; mark the record `deleting`, with who tears it down;
//! 2. undeploy if anything is deployed, and wait for `available` (automated cleaning
//!    included); then hold the node with this process's own token (undeploy cleared the VM's
//!    claim);
//! 3. optional manual cleaning;
//! 4. restore the origin state, or delete a node this CPI enrolled;
//! 5. restore the name, then remove the record, the metadata and the token in one request.
//!
//! The record stays until step 5, so no create_vm takes the node meanwhile: a claim that lands
//! between undeploy and step 2's hold sees the record and lets go at once. The token makes one
//! teardown of a VM at a time act on the node after undeploy: a second one (a retry while the
//! first still runs) waits for it, or takes over once its process has exited. Every write
//! carries [`while_owned`], so Ironic refuses it once the VM's record is gone: taking the token
//! can never put a released VM's record back. docs/ownership.md has the reasoning.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{IronicConfig, Seconds};
use crate::error::{CpiError, Result};
use crate::ironic::{wait, ConflictKind, Ironic, IronicError, Node, PatchOp};
use crate::pool::confirm::{self, read_back, Confirmed};
use crate::pool::record::{
    disks, enrolled_by_cpi, record_path, timestamp, while_owned, Phase, TeardownMark, VmRecord,
    DISKS_KEY, INSTANCE_INFO_KEYS, METADATA_KEY, VM_KEY,
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

/// How marking the record before undeploy went.
enum Marked {
    Yes,
    /// The record is gone: the VM was released by another teardown.
    Gone,
    /// The node is in a transition (another teardown of the VM is undeploying it).
    Busy,
}

/// What the node's `instance_uuid` is to this teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grip {
    /// The VM's own claim (deployed, or a claim this process may drop).
    VmClaim,
    /// This process's token.
    Token,
}

/// What happened, for the caller's log.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<String>,
}

impl Teardown<'_> {
    /// Return the node of VM `cid`. A VM that is gone (no node, or a node that holds another VM
    /// or none) is success without touching anything.
    pub fn run(&self, cid: &VmCid) -> Result<Report> {
        let token = uuid::Uuid::now_v7().to_string();
        let result = self.run_holding(cid, &token);
        if result.is_err() {
            self.let_go(cid, &token);
        }
        result
    }

    fn run_holding(&self, cid: &VmCid, token: &str) -> Result<Report> {
        let mut report = Report::default();
        let Some((mut node, mut record, grip)) = self.take(cid, token, &mut report)? else {
            return Ok(report);
        };
        if grip == Grip::VmClaim {
            if DEPLOYED_STATES.contains(&node.state()) {
                match self.mark_undeploying(&node, &record)? {
                    Marked::Gone => return Ok(released_meanwhile(report, cid)),
                    // Another teardown of the VM has started undeploying: the next look
                    // waits for it.
                    Marked::Busy => {}
                    Marked::Yes => {
                        let from = node.state().to_string();
                        self.action(&node, "deleted", None)?;
                        if self
                            .wait(&node, "available", self.ironic.timeouts.undeploy)?
                            .is_none()
                        {
                            return Ok(released_meanwhile(report, cid));
                        }
                        report
                            .steps
                            .push(format!("undeployed node {} from {from}", node.label()));
                    }
                }
            } else {
                // Nothing deployed, so nothing clears the claim for us: our token replaces it.
                self.drop_claim(&node, &record.vm_id, &record.vm_id)?;
            }
            let Some((held, now, Grip::Token)) = self.take(cid, token, &mut report)? else {
                return Ok(report);
            };
            node = held;
            record = now;
        }

        if node.state() == "clean failed" {
            // A cleaning that failed earlier (a previous attempt) leaves the node stuck until
            // `manage`; from manageable the origin state can be restored.
            self.action(&node, "manage", None)?;
            let Some(n) = self.wait(&node, "manageable", self.ironic.timeouts.manage)? else {
                return Ok(released_meanwhile(report, cid));
            };
            node = n;
        }

        let enrolled = enrolled_by_cpi(&node);
        let clean = record
            .clean_on_delete
            .unwrap_or(self.ironic.clean_on_delete);
        if clean && !enrolled {
            let Some(n) = self.manual_clean(node)? else {
                return Ok(released_meanwhile(report, cid));
            };
            node = n;
            report.steps.push(format!("cleaned node {}", node.label()));
        }

        if enrolled {
            self.delete_enrolled(&node, &record.vm_id)?;
            report.steps.push(format!(
                "deleted node {} (it was enrolled by create_vm)",
                node.label()
            ));
            return Ok(report);
        }

        let Some(node) = self.restore_state(node, &record.origin_state)? else {
            return Ok(released_meanwhile(report, cid));
        };
        self.restore_name(&node, &record);
        self.release(&node, &record)?;
        report.steps.push(format!(
            "released node {} in state {}",
            node.label(),
            node.state()
        ));
        Ok(report)
    }

    /// After a failure: give up our token, if we hold it, so that the next teardown (a retry)
    /// can take the node at once instead of waiting to learn that this process has exited. The
    /// record stays: it says what is left to do.
    fn let_go(&self, cid: &VmCid, token: &str) {
        let Ok(node) = self.api.get_node(&cid.node) else {
            return;
        };
        if node.instance_uuid.as_deref() == Some(token) {
            let ops = [while_owned(&cid.vm_id), PatchOp::remove("/instance_uuid")];
            if let Err(e) = self.api.patch_node(&node.uuid, &ops) {
                log::warn!(
                    "node {}: could not give up the teardown's hold ({e}); the next teardown \
                     takes over once this process has exited",
                    node.label()
                );
            }
        }
    }

    /// The VM's node, settled, and held: by the VM's claim (deployed, or one this process may
    /// drop) or by our token. None when the VM is gone. Waits out a transition, a stranger's
    /// short-lived claim, and another teardown of the VM that is still running (which finishes
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
            let (node, record) = match self.lookup(cid)? {
                Lookup::Held(node, record) => (*node, *record),
                Lookup::Gone(why) => {
                    report.steps.push(format!("VM {cid} is gone: {why}"));
                    return Ok(None);
                }
            };
            if node.in_transition() && !STABLE_STATES.contains(&node.state()) {
                self.settle(&node)?;
                continue;
            }
            let other = match node.instance_uuid.as_deref() {
                Some(u) if u == token => return Ok(Some((node, record, Grip::Token))),
                Some(u) if u == cid.vm_id => {
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
                    match self.hold_with_token(&node, &record, token) {
                        Ok(()) => {}
                        // Someone was faster, or the record went: the next look tells.
                        Err(e) if e.is_final_conflict() || is_refused(&e) => {}
                        Err(e) => return Err(fail(e, "holding the node for the teardown")),
                    }
                    continue;
                }
            };

            // Someone else holds the node's instance_uuid.
            let mark = record
                .teardown
                .as_ref()
                .filter(|m| m.token.as_deref() == Some(other.as_str()));
            if let Some(mark) = mark {
                let exited = (self.liveness)(&mark.by) == Liveness::Exited;
                if exited || self.force {
                    log::warn!(
                        "node {}: taking over the teardown of VM {cid} from {} ({})",
                        node.label(),
                        mark.by.describe(),
                        if exited { "it has exited" } else { "forced" }
                    );
                    self.drop_claim(&node, &record.vm_id, &other)?;
                    continue;
                }
                let what = format!("the teardown of VM {cid} by {}", mark.by.describe());
                if waiting_for.as_deref() != Some(&what) {
                    log::info!("node {}: waiting for {what} to finish", node.label());
                    waiting_for = Some(what);
                }
                // As long as a whole teardown may take.
                let patience = self.ironic.timeouts.undeploy.get()
                    + self.ironic.timeouts.clean.get()
                    + self.ironic.timeouts.provide.get();
                if self.api.now() - started > patience {
                    return Err(CpiError::cloud(format!(
                        "node {}: {} has not finished after {:.0} s; if that process is gone, \
                         `ironic_cpi free {} --force` takes over",
                        node.label(),
                        waiting_for.unwrap_or_default(),
                        patience.as_secs_f64(),
                        node.uuid
                    )));
                }
            } else if self.api.now() - started > STRANGER_PATIENCE {
                // A create_vm that claimed the node from a stale listing lets go as soon as it
                // sees the record; anything else is another user of Ironic.
                return Err(CpiError::cloud(format!(
                    "node {} of VM {cid} is held by instance_uuid {other}, which is neither this \
                     VM nor one of its teardowns, and was not let go within {:.0} s: another \
                     user of Ironic may have taken the node",
                    node.label(),
                    STRANGER_PATIENCE.as_secs_f64()
                )));
            }
            self.api.sleep(delay);
            delay = (delay * 2).min(
                self.ironic
                    .poll
                    .max_interval
                    .get()
                    .max(Duration::from_millis(250)),
            );
        }
    }

    /// The node and record of the VM, riding out transient failures (a read is always safe to
    /// repeat, and a teardown that gives up over one lost answer leaves work for the operator).
    fn lookup(&self, cid: &VmCid) -> Result<Lookup> {
        let deadline = self.api.now() + Duration::from_secs(120);
        let mut delay = Duration::from_millis(500);
        loop {
            match lookup(self.api, cid) {
                Ok(l) => return Ok(l),
                Err(e) if e.is_transient() && self.api.now() < deadline => {
                    log::warn!("reading the node of VM {cid}: {e}; trying again");
                    self.api.sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(fail(e, "reading the node")),
            }
        }
    }

    /// Phase `deleting`, and this process as the one tearing down, right before undeploy. It is
    /// also the last check that the node is still the VM's: `deleted` cannot be made
    /// conditional, so it follows a write that is. False when the record is gone (another
    /// teardown of the VM finished). Nothing about the claim: undeploy clears it, and writing it
    /// here could set it again on a node a concurrent teardown of the VM has just undeployed.
    fn mark_undeploying(&self, node: &Node, record: &VmRecord) -> Result<Marked> {
        let ops = self.mark_ops(record, None);
        let uuid = node.uuid.as_str();
        let vm_id = record.vm_id.as_str();
        match confirm::change(
            self.api,
            uuid,
            "marking the VM's teardown",
            || self.api.patch_node(uuid, &ops),
            |n| VmRecord::read(n).is_some_and(|r| r.vm_id == vm_id && r.phase == Phase::Deleting),
        ) {
            Ok(_) => Ok(Marked::Yes),
            Err(e) if is_refused(&e) => Ok(Marked::Gone),
            Err(e) if e.conflict_kind() == Some(ConflictKind::Other) => Ok(Marked::Busy),
            Err(e) => Err(fail(
                e,
                &format!("marking the teardown on node {}", node.label()),
            )),
        }
    }

    /// Our token on a node whose instance_uuid is empty, with the mark saying so, in one
    /// request that Ironic refuses if anybody holds the node or the VM's record is gone.
    fn hold_with_token(
        &self,
        node: &Node,
        record: &VmRecord,
        token: &str,
    ) -> std::result::Result<(), IronicError> {
        let mut ops = self.mark_ops(record, Some(token));
        ops.push(PatchOp::add("/instance_uuid", json!(token)));
        let uuid = node.uuid.as_str();
        confirm::change(
            self.api,
            uuid,
            "holding the node",
            || self.api.patch_node(uuid, &ops),
            |n| n.instance_uuid.as_deref() == Some(token),
        )
        .map(drop)
    }

    fn mark_ops(&self, record: &VmRecord, token: Option<&str>) -> Vec<PatchOp> {
        let path = record_path(&record.vm_id);
        let mark = TeardownMark {
            token: token.map(str::to_string),
            by: self.me.clone(),
            started_at: timestamp(std::time::SystemTime::now()),
        };
        vec![
            while_owned(&record.vm_id),
            PatchOp::add(format!("{path}/phase"), json!(Phase::Deleting.as_str())),
            PatchOp::add(format!("{path}/teardown"), json!(mark)),
        ]
    }

    /// Remove `value` from the node's instance_uuid (the VM's claim, or the token of a
    /// teardown whose process has exited), while the VM's record is there.
    fn drop_claim(&self, node: &Node, vm_id: &str, value: &str) -> Result<()> {
        let uuid = node.uuid.as_str();
        let ops = [while_owned(vm_id), PatchOp::remove("/instance_uuid")];
        match confirm::change(
            self.api,
            uuid,
            "removing a claim",
            || self.api.patch_node(uuid, &ops),
            |n| n.instance_uuid.as_deref() != Some(value),
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_refused(&e) => Ok(()),
            Err(e) => Err(fail(
                e,
                &format!("removing the claim on node {}", node.label()),
            )),
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
        let timeout = (self.ironic.timeouts.deploy.get()).max(self.ironic.timeouts.undeploy.get());
        match wait::provision_state(
            self.api,
            &self.ironic.poll,
            &node.uuid,
            &STABLE_STATES,
            timeout,
        ) {
            Ok(n) => Ok(n),
            // A failed state is settled too: the steps after this deal with it.
            Err(IronicError::WaitFailed { .. }) => {
                read_back(self.api, &node.uuid).map_err(|e| fail(e, "reading the node"))
            }
            Err(e) => Err(fail(e, "waiting for the node to settle")),
        }
    }

    /// A provision action; a lost answer, or a refusal because it already happened (a
    /// concurrent teardown of the same VM), is judged by what the node shows.
    fn action(&self, node: &Node, target: &str, body: Option<Value>) -> Result<()> {
        log::info!("node {}: provision action '{target}'", node.label());
        confirm::provision_action(self.api, node, target, body)
            .map_err(|e| fail(e, &format!("'{target}' on node {}", node.label())))
    }

    /// Wait for `target`; None when the VM's record went meanwhile (another teardown of the VM
    /// finished, and the node may belong to a new VM already: nothing more may be done to it).
    fn wait(&self, node: &Node, target: &str, timeout: Seconds) -> Result<Option<Node>> {
        let vm_id = VmRecord::read(node).map(|r| r.vm_id);
        let gone = |n: &Node| VmRecord::read(n).map(|r| r.vm_id) != vm_id;
        let n = wait::provision_state_unless(
            self.api,
            &self.ironic.poll,
            &node.uuid,
            &[target],
            timeout.get(),
            gone,
        )
        .map_err(|e| fail(e, &format!("returning node {} to the pool", node.label())))?;
        Ok((!gone(&n)).then_some(n))
    }

    fn manual_clean(&self, mut node: Node) -> Result<Option<Node>> {
        // Manual cleaning starts from manageable.
        if node.state() != "manageable" {
            self.action(&node, "manage", None)?;
            match self.wait(&node, "manageable", self.ironic.timeouts.manage)? {
                Some(n) => node = n,
                None => return Ok(None),
            }
        }
        let steps = json!({ "clean_steps": self.ironic.clean_steps });
        self.action(&node, "clean", Some(steps))?;
        self.wait(&node, "manageable", self.ironic.timeouts.clean)
    }

    fn restore_state(&self, node: Node, origin: &str) -> Result<Option<Node>> {
        match (node.state(), origin) {
            ("available", "manageable") => {
                self.action(&node, "manage", None)?;
                self.wait(&node, "manageable", self.ironic.timeouts.manage)
            }
            ("manageable", "available") => {
                self.action(&node, "provide", None)?;
                self.wait(&node, "available", self.ironic.timeouts.provide)
            }
            _ => Ok(Some(node)),
        }
    }

    /// Nodes enrolled by create_vm leave with their VM. Power off first and wait for it: a node
    /// deleted while powered on keeps running unmanaged.
    fn delete_enrolled(&self, node: &Node, vm_id: &str) -> Result<()> {
        if node.power_state.as_deref() != Some("power off") {
            self.api
                .set_power_state(&node.uuid, "power off")
                .map_err(|e| fail(e, "powering off the enrolled node"))?;
            wait::power_state(
                self.api,
                &self.ironic.poll,
                &node.uuid,
                "power off",
                self.ironic.timeouts.power.get(),
            )
            .map_err(|e| fail(e, "powering off the enrolled node"))?;
        }
        // Ironic refuses to delete a node that is associated with an instance.
        if node.instance_uuid.is_some() {
            let ops = [while_owned(vm_id), PatchOp::remove("/instance_uuid")];
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
    fn restore_name(&self, node: &Node, record: &VmRecord) {
        if node.name == record.origin_name {
            return;
        }
        let name = match &record.origin_name {
            Some(name) => PatchOp::add("/name", json!(name)),
            None => PatchOp::remove("/name"),
        };
        let ops = [while_owned(&record.vm_id), name];
        if let Err(e) = self.api.patch_node(&node.uuid, &ops) {
            log::warn!("node {}: could not restore its name: {e}", node.label());
        }
    }

    /// Drop everything create_vm and set_vm_metadata wrote, detach the VM's disks, and release
    /// the node, in one request: the node becomes free only once it is clean. The first
    /// operation removes the VM's own record, so a second teardown of the VM (which read the
    /// node before this one released it) has its release refused instead of taking anything
    /// from the node's next VM.
    fn release(&self, node: &Node, record: &VmRecord) -> Result<()> {
        let vm_id = record.vm_id.as_str();
        let mut ops = vec![
            PatchOp::remove(record_path(vm_id)),
            PatchOp::remove(format!("/extra/{VM_KEY}")),
        ];
        ops.extend(
            INSTANCE_INFO_KEYS
                .iter()
                .filter(|k| node.instance_info.contains_key(**k))
                .map(|k| PatchOp::remove(format!("/instance_info/{k}"))),
        );
        if node.extra.contains_key(METADATA_KEY) {
            ops.push(PatchOp::remove(format!("/extra/{METADATA_KEY}")));
        }
        let mut records = disks(node);
        let mut detached = false;
        for d in records.values_mut() {
            if let Some(obj) = d.as_object_mut() {
                if obj.get("attached_to").and_then(Value::as_str) == Some(vm_id) {
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
        // Our token (nobody else could set another while it was there).
        if node.instance_uuid.is_some() {
            ops.push(PatchOp::remove("/instance_uuid"));
        }
        let uuid = node.uuid.as_str();
        let released = confirm::change(
            self.api,
            uuid,
            "releasing the node",
            || self.api.patch_node(uuid, &ops),
            |n| VmRecord::read(n).is_none_or(|r| r.vm_id != vm_id),
        );
        match released {
            Ok(Confirmed::Answered(_) | Confirmed::ReadBack(_)) => Ok(()),
            // Refused because the record is gone: another teardown of this VM released it.
            Err(e)
                if is_refused(&e)
                    && read_back(self.api, uuid)
                        .is_ok_and(|n| VmRecord::read(&n).is_none_or(|r| r.vm_id != vm_id)) =>
            {
                Ok(())
            }
            Err(e) => Err(fail(e, &format!("releasing node {}", node.label()))),
        }
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

fn released_meanwhile(mut report: Report, cid: &VmCid) -> Report {
    report.steps.push(format!(
        "VM {cid} was released by another teardown meanwhile"
    ));
    report
}

/// Refused as a whole because a path did not exist: the VM's record is gone.
fn is_refused(e: &IronicError) -> bool {
    matches!(e, IronicError::BadRequest { .. })
}

fn fail(e: IronicError, what: &str) -> CpiError {
    crate::error::from_ironic(e, crate::error::Stage::Call, what)
}
