//! Reserving a node for one VM, atomically, in three requests:
//!
//! 1. **Claim**: `instance_uuid` := the VM's id. Ironic refuses a new `instance_uuid` on a node
//!    that has one (409 "associated with instance"), so of any number of concurrent claims
//!    exactly one holds. The request touches nothing else: Ironic writes a PATCH back as whole
//!    fields computed from a read taken before its lock, so a claim that also wrote `extra` could
//!    put back what another process had just removed from it.
//! 2. **Check** the node as the claim left it: a VM record (another VM being torn down, its
//!    `instance_uuid` cleared by undeploy), maintenance, a transition or a state that is not
//!    free means the node is not ours to take: the claim is removed again at once.
//! 3. **Record** the VM in `extra.bosh_vm` while holding the claim. From here the node belongs to
//!    the VM until its teardown removes the record.
//!
//! Every request survives a lost answer: the node is read back and decides (see `confirm`).

use serde_json::json;

use crate::ironic::error::ConflictKind;
use crate::ironic::{Ironic, IronicError, Node, PatchOp};
use crate::pool::confirm::{self, Confirmed};
use crate::pool::record::{has_vm_record, VmRecord, VM_KEY};
use crate::pool::select::FREE_STATES;

/// A node reserved for a VM, as Ironic holds it.
pub struct Reservation {
    pub node: Node,
    pub record: VmRecord,
}

pub enum Reserve {
    Held(Box<Reservation>),
    /// Someone else has the node, or it changed since it was listed: try another. Why, for the
    /// log.
    Lost(String),
}

/// Reserve `listed` for VM `vm_id`; `record` makes the VM's record from the node as claimed
/// (its origin state and name are read then, not from the listing).
pub fn reserve(
    api: &dyn Ironic,
    listed: &Node,
    vm_id: &str,
    record: impl Fn(&Node) -> VmRecord,
) -> Result<Reserve, IronicError> {
    let uuid = listed.uuid.as_str();
    let claim = [PatchOp::add("/instance_uuid", json!(vm_id))];
    let claimed = confirm::change(
        api,
        uuid,
        "claiming the node",
        || api.patch_node(uuid, &claim),
        |n| n.instance_uuid.as_deref() == Some(vm_id),
    );
    let node = match claimed {
        Ok(Confirmed::Answered(n)) => n,
        Ok(Confirmed::ReadBack(n)) => *n,
        Err(e) if lost_race(&e) => {
            return Ok(Reserve::Lost(format!(
                "node {} was taken or is busy: {e}",
                listed.label()
            )))
        }
        // NodeLocked after the client's retries: a conductor holds the node for a long
        // operation (another consumer's deploy or cleaning). Ironic refused the claim before
        // applying it, so there is nothing to undo.
        Err(e) if e.conflict_kind() == Some(ConflictKind::NodeLocked) => {
            return Ok(Reserve::Lost(format!(
                "node {} stayed locked through every retry, busy with another consumer's \
                 operation: {e}",
                listed.label()
            )))
        }
        Err(e) => return Err(e),
    };

    if let Some(why) = not_ours(&node, listed) {
        release_claim(api, &node, vm_id)?;
        return Ok(Reserve::Lost(format!("node {}: {why}", node.label())));
    }

    let record = record(&node);
    let ops = [
        // Still ours: Ironic refuses the whole request if another instance_uuid took its place.
        PatchOp::add("/instance_uuid", json!(vm_id)),
        PatchOp::add(format!("/extra/{VM_KEY}"), record.container()),
    ];
    let recorded = confirm::change(
        api,
        uuid,
        "recording the VM",
        || api.patch_node(uuid, &ops),
        |n| VmRecord::read(n).is_some_and(|r| r.vm_id == vm_id),
    );
    match recorded {
        Ok(confirmed) => {
            let node = match confirmed {
                Confirmed::Answered(n) => n,
                Confirmed::ReadBack(n) => *n,
            };
            log::info!(
                "reserved node {} ({}) for VM {vm_id}",
                node.label(),
                node.state()
            );
            Ok(Reserve::Held(Box::new(Reservation { node, record })))
        }
        Err(e) => {
            if let Err(release) = release_claim(api, &node, vm_id) {
                log::error!(
                    "node {}: could not remove the claim {vm_id} after failing to record the VM: \
                     {release}",
                    node.label()
                );
            }
            Err(e)
        }
    }
}

/// Why a node just claimed must be let go, if it must.
fn not_ours(node: &Node, listed: &Node) -> Option<String> {
    if has_vm_record(node) {
        return Some(format!(
            "it carries another VM's record (extra.{VM_KEY}): that VM is still being torn down"
        ));
    }
    if node.maintenance {
        return Some("it went into maintenance".into());
    }
    if let Some(target) = &node.target_provision_state {
        return Some(format!("it is busy ({} -> {target})", node.state()));
    }
    if !FREE_STATES.contains(&node.state()) || node.provision_state != listed.provision_state {
        return Some(format!(
            "its state changed from {} to {}",
            listed.state(),
            node.state()
        ));
    }
    None
}

/// Remove a claim this process made and on which nothing was built. Only ever our own value:
/// while it is set nobody else can set another, so removing it cannot remove someone else's.
fn release_claim(api: &dyn Ironic, node: &Node, vm_id: &str) -> Result<(), IronicError> {
    if node.instance_uuid.as_deref() != Some(vm_id) {
        return Ok(());
    }
    let uuid = node.uuid.as_str();
    let ops = [PatchOp::remove("/instance_uuid")];
    confirm::change(
        api,
        uuid,
        "removing our claim",
        || api.patch_node(uuid, &ops),
        |n| n.instance_uuid.as_deref() != Some(vm_id),
    )
    .map(drop)
}

/// Any final 409 means the node is someone else's now: associated with another instance, or in
/// a transition someone started ("can not be updated while a state transition is in progress").
/// NodeLocked never gets here: the client retries it. A node deleted meanwhile is lost too.
fn lost_race(e: &IronicError) -> bool {
    e.is_not_found()
        || e.conflict_kind()
            .is_some_and(|k| k != ConflictKind::NodeLocked)
}
