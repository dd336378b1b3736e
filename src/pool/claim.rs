//! Claiming a node atomically: `instance_uuid` is a compare-and-set inside Ironic (a PATCH on a
//! node that already has another one fails with 409 "associated with instance"), so two
//! create_vm processes can never get the same node, whatever they listed.

use serde_json::json;

use crate::ironic::error::ConflictKind;
use crate::ironic::{IronicClient, IronicError, Node, PatchOp};
use crate::pool::record::{VmRecord, VM_KEY};
use crate::pool::select::FREE_STATES;

pub struct Claimed {
    pub node: Node,
    pub record: VmRecord,
}

pub enum ClaimOutcome {
    Claimed(Box<Claimed>),
    /// Every candidate was taken, changed between the listing and the claim, or stayed locked.
    AllTaken {
        lost: usize,
    },
}

/// Try the candidates in order; the first claim that holds wins.
pub fn claim_first(
    client: &IronicClient,
    candidates: &[&Node],
    agent_id: &str,
    stemcell: &str,
) -> Result<ClaimOutcome, IronicError> {
    let mut lost = 0;
    for listed in candidates {
        let mut record = VmRecord::new(agent_id, listed);
        record.stemcell = Some(stemcell.to_string());
        let ops = [
            PatchOp::add("/instance_uuid", json!(record.instance_uuid)),
            PatchOp::add(format!("/extra/{VM_KEY}"), record.to_value()),
        ];
        let node = match client.patch_node(&listed.uuid, &ops) {
            Ok(node) => node,
            Err(e) if lost_race(&e) => {
                log::info!("node {} was taken by another consumer: {e}", listed.label());
                lost += 1;
                continue;
            }
            Err(e) if still_locked(&e) => {
                log::info!(
                    "node {} stayed locked through every retry, busy with another \
                     consumer's operation: trying the next candidate ({e})",
                    listed.label()
                );
                lost += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        // The listing may be stale: the node must still be free and in the state we recorded
        // as its origin, or the record would restore it wrongly.
        let unchanged = !node.maintenance
            && node.target_provision_state.is_none()
            && node.provision_state == listed.provision_state
            && FREE_STATES.contains(&node.state());
        if unchanged {
            log::info!(
                "claimed node {} ({}) with instance_uuid {}",
                node.label(),
                node.state(),
                record.instance_uuid
            );
            return Ok(ClaimOutcome::Claimed(Box::new(Claimed { node, record })));
        }
        log::info!(
            "node {} changed since it was listed (now {}, maintenance {}): releasing it",
            node.label(),
            node.state(),
            node.maintenance
        );
        release_bare_claim(client, &node, &record)?;
        lost += 1;
    }
    Ok(ClaimOutcome::AllTaken { lost })
}

/// Any final 409 means another consumer is on the node: associated with its instance, or busy
/// in a transition it started ("can not be updated while a state transition is in progress").
/// NodeLocked is retried by the client first (see `still_locked`).
fn lost_race(e: &IronicError) -> bool {
    e.is_not_found()
        || e.conflict_kind()
            .is_some_and(|k| k != ConflictKind::NodeLocked)
}

/// NodeLocked after the client's retries: a conductor holds the node for a long operation.
/// A free node is locked only for moments (power sync, a PATCH), while another consumer's deploy
/// or cleaning holds it for as long as it runs; failing the whole create_vm for it would waste
/// the other candidates.
fn still_locked(e: &IronicError) -> bool {
    e.conflict_kind() == Some(ConflictKind::NodeLocked)
}

/// Undo a claim on which nothing else was done yet.
fn release_bare_claim(
    client: &IronicClient,
    node: &Node,
    record: &VmRecord,
) -> Result<(), IronicError> {
    if node.instance_uuid.as_deref() != Some(record.instance_uuid.as_str()) {
        return Ok(());
    }
    client
        .patch_node(
            &node.uuid,
            &[
                PatchOp::remove("/instance_uuid"),
                PatchOp::remove(format!("/extra/{VM_KEY}")),
            ],
        )
        .map(drop)
}
