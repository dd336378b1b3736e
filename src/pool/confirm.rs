//! State-changing requests whose answer may be lost.
//!
//! A request that timed out or lost its connection after it was sent may have been applied. It
//! is never simply repeated, and never simply given up on: the node is read back, and what Ironic
//! holds decides whether the change happened (go on), did not (send it again), or cannot be
//! known yet (read again until a deadline).

use std::time::Duration;

use crate::ironic::{ConflictKind, Ironic, IronicError, Node};

/// How the change was confirmed.
pub enum Confirmed<T> {
    /// Ironic answered.
    Answered(T),
    /// The answer was lost; the node read back shows the change.
    ReadBack(Box<Node>),
}

/// Attempts of one change in all (the first, and resends after a read-back showed it missing).
const ATTEMPTS: u32 = 3;
/// How long to keep reading back a node that does not answer.
const READ_BACK_FOR: Duration = Duration::from_secs(120);

/// Send `send`; when its answer is lost, read node `id` and let `done` judge. A 409 "invalid
/// state" is judged the same way: a provision action is refused once it has happened (by a
/// first attempt whose answer was lost, or by a concurrent call doing the same work), and so is
/// any final error of a resend.
pub fn change<T>(
    api: &dyn Ironic,
    id: &str,
    what: &str,
    mut send: impl FnMut() -> Result<T, IronicError>,
    done: impl Fn(&Node) -> bool,
) -> Result<Confirmed<T>, IronicError> {
    let mut lost: Option<IronicError> = None;
    for attempt in 1..=ATTEMPTS {
        match send() {
            Ok(v) => return Ok(Confirmed::Answered(v)),
            Err(e)
                if e.maybe_applied()
                    || e.conflict_kind() == Some(ConflictKind::InvalidState)
                    || (lost.is_some() && !e.is_not_found()) =>
            {
                log::warn!("{what} on node {id}: {e}; reading the node back (attempt {attempt})");
                let node = read_back(api, id)?;
                if done(&node) {
                    log::info!("{what} on node {id} did happen: the node shows it");
                    return Ok(Confirmed::ReadBack(Box::new(node)));
                }
                if !e.maybe_applied() {
                    // A resend was refused and the change is not there: that answer stands.
                    return Err(e);
                }
                lost = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(lost.unwrap_or_else(|| IronicError::Decode {
        what: what.to_string(),
        message: "no attempt was made".into(),
    }))
}

/// The node, read until Ironic answers (transient failures are ridden out for a while).
pub fn read_back(api: &dyn Ironic, id: &str) -> Result<Node, IronicError> {
    let deadline = api.now() + READ_BACK_FOR;
    let mut delay = Duration::from_millis(500);
    loop {
        match api.get_node(id) {
            Ok(n) => return Ok(n),
            Err(e) if e.is_transient() && api.now() < deadline => {
                log::warn!("reading node {id} back: {e}; trying again");
                api.sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A provision action (`target`: provide, active, deleted, manage, clean...) sent so that a lost
/// answer, or a refusal because it already happened, is judged by what the node shows.
pub fn provision_action(
    api: &dyn Ironic,
    node: &Node,
    target: &str,
    body: Option<serde_json::Value>,
) -> Result<(), IronicError> {
    let uuid = node.uuid.as_str();
    let from = node.state().to_string();
    change(
        api,
        uuid,
        target,
        || api.set_provision_state(uuid, target, body.clone()),
        |n| action_happened(target, &from, n),
    )
    .map(drop)
}

/// Whether a provision action whose answer was lost shows on the node.
pub fn action_happened(target: &str, from: &str, n: &Node) -> bool {
    let state = n.state();
    // A failure state keeps the target of what failed, which says nothing about this action.
    let heading = n
        .target_provision_state
        .as_deref()
        .filter(|_| n.in_transition());
    let failed_anew = |failure: &str| state == failure && from != failure;
    match target {
        "deleted" => {
            heading == Some("available")
                || matches!(state, "deleting" | "cleaning" | "clean wait")
                || failed_anew("clean failed")
                || (state == "available" && from != "available")
        }
        "provide" => {
            heading == Some("available")
                || matches!(state, "cleaning" | "clean wait")
                || failed_anew("clean failed")
                || (state == "available" && from != "available")
        }
        "manage" => heading == Some("manageable") || matches!(state, "manageable" | "verifying"),
        "clean" => {
            heading == Some("manageable")
                || matches!(state, "cleaning" | "clean wait")
                || failed_anew("clean failed")
        }
        "active" => {
            heading == Some("active")
                || matches!(state, "deploying" | "wait call-back" | "active")
                || failed_anew("deploy failed")
        }
        _ => false,
    }
}
