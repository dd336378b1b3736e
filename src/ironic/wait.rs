//! Waiting for Ironic's asynchronous transitions: poll with a growing interval, stop at once on
//! a failure (`* failed`, `error`, maintenance, fault), and report what was seen.

use std::time::Duration;

use log::debug;

use super::api::Ironic;
use super::client::IronicClient;
use super::error::IronicError;
use super::types::Node;
use crate::config::PollPolicy;
use ironic_cpi_http::Policy;

/// What one poll saw, for the error if the wait ends badly.
struct Seen {
    label: String,
    state: String,
    last_error: Option<String>,
}

/// One poll's verdict.
enum Poll<T> {
    Done(T),
    Failed(Seen, String),
    Pending(Seen),
}

/// Why a node can no longer reach the target by itself, if it cannot.
fn node_failure(node: &Node) -> Option<String> {
    let state = node.state();
    if state.ends_with(" failed") || state == "error" {
        return Some(format!("Ironic reports '{state}'"));
    }
    if node.maintenance {
        let why = node
            .fault
            .as_deref()
            .or(node.maintenance_reason.as_deref())
            .unwrap_or("no reason given");
        return Some(format!("the node was put into maintenance: {why}"));
    }
    if let Some(fault) = node.fault.as_deref().filter(|f| !f.is_empty()) {
        return Some(format!("the node has fault '{fault}'"));
    }
    None
}

/// When the first poll goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At once: the node may be there already.
    Now,
    /// After one interval: the caller has just started the transition, and Ironic answers an
    /// action before its conductor has done it, so an immediate poll would only see it running.
    AfterInterval,
}

/// The polling loop shared by the waits: `step` fetches and judges; the last poll happens
/// right at the deadline, so a transition that finishes then is still seen. A transient failure
/// of one poll (Ironic restarting, a dropped connection) does not end the wait: the deadline
/// does, because a long deploy must ride out an Ironic restart.
fn poll_until<T>(
    api: &dyn Ironic,
    policy: &PollPolicy,
    target: &str,
    timeout: Duration,
    start: Start,
    mut step: impl FnMut() -> Result<Poll<T>, IronicError>,
) -> Result<T, IronicError> {
    let started = api.now();
    let deadline = started + timeout;
    let max = policy.max_interval.get();
    // Without a budget the delays never end: `max` stands in for the impossible `None`.
    let mut delays = Policy::new(
        policy.initial_interval.get(),
        policy.factor,
        max,
        policy.jitter,
    )
    .delays();
    let mut last_seen: Option<Seen> = None;
    if start == Start::AfterInterval {
        api.sleep(delays.next().unwrap_or(max).min(timeout));
    }
    loop {
        let seen = match step() {
            Ok(Poll::Done(v)) => {
                debug!(
                    "reached {target} after {:.2} s",
                    (api.now() - started).as_secs_f64()
                );
                return Ok(v);
            }
            Ok(Poll::Failed(seen, reason)) => {
                return Err(IronicError::WaitFailed {
                    node: seen.label,
                    state: seen.state.into(),
                    target: target.into(),
                    last_error: seen.last_error,
                    elapsed: api.now() - started,
                    reason: reason.into(),
                })
            }
            Ok(Poll::Pending(seen)) => Some(seen),
            Err(e) if e.is_transient() && api.now() < deadline => {
                debug!("polling for {target}: {e}; polling on");
                None
            }
            Err(e) => return Err(e),
        };
        if seen.is_some() {
            last_seen = seen;
        }
        let now = api.now();
        if now >= deadline {
            let seen = last_seen.unwrap_or(Seen {
                label: "?".into(),
                state: "unknown (Ironic did not answer)".into(),
                last_error: None,
            });
            return Err(IronicError::WaitTimeout {
                node: seen.label,
                state: seen.state.into(),
                target: target.into(),
                waited_for: timeout,
                elapsed: now - started,
                last_error: seen.last_error,
            });
        }
        api.sleep(delays.next().unwrap_or(max).min(deadline - now));
    }
}

/// Poll until the node's provision state is one of `targets` with no transition pending.
pub fn provision_state(
    api: &dyn Ironic,
    policy: &PollPolicy,
    id: &str,
    targets: &[&str],
    timeout: Duration,
) -> Result<Node, IronicError> {
    provision_state_unless(api, policy, id, targets, timeout, |_| false)
}

/// Like [`provision_state`], but the wait also ends, with the node as it is, as soon as
/// `unless` holds for it (the caller's reason to stop waiting, e.g. the node changed hands).
pub fn provision_state_unless(
    api: &dyn Ironic,
    policy: &PollPolicy,
    id: &str,
    targets: &[&str],
    timeout: Duration,
    unless: impl Fn(&Node) -> bool,
) -> Result<Node, IronicError> {
    provision_poll(api, policy, id, targets, timeout, Start::Now, unless)
}

/// Like [`provision_state`], for a transition the caller has just started with an action: the
/// first poll waits one interval, which saves a request that could only see the node moving.
pub fn provision_state_after_action(
    api: &dyn Ironic,
    policy: &PollPolicy,
    id: &str,
    targets: &[&str],
    timeout: Duration,
) -> Result<Node, IronicError> {
    provision_poll(
        api,
        policy,
        id,
        targets,
        timeout,
        Start::AfterInterval,
        |_| false,
    )
}

fn provision_poll(
    api: &dyn Ironic,
    policy: &PollPolicy,
    id: &str,
    targets: &[&str],
    timeout: Duration,
    start: Start,
    unless: impl Fn(&Node) -> bool,
) -> Result<Node, IronicError> {
    poll_until(api, policy, &targets.join(" or "), timeout, start, || {
        let node = api.get_node(id)?;
        if unless(&node)
            || (targets.contains(&node.state()) && node.target_provision_state.is_none())
        {
            return Ok(Poll::Done(node));
        }
        let seen = Seen {
            label: node.label(),
            state: match &node.target_provision_state {
                Some(t) => format!("{} (target {t})", node.state()),
                None => node.state().to_string(),
            },
            last_error: node.last_error.clone(),
        };
        Ok(match node_failure(&node) {
            Some(reason) => Poll::Failed(seen, reason),
            None => Poll::Pending(seen),
        })
    })
}

/// Poll until the node's power state is `target` (`rebooting` waits for `power on`).
///
/// A failed power action leaves the power state unchanged, clears the pending target and sets
/// `last_error`; a `last_error` that differs from the one seen first means this action failed.
pub fn power_state(
    api: &dyn Ironic,
    policy: &PollPolicy,
    id: &str,
    target: &str,
    timeout: Duration,
) -> Result<Node, IronicError> {
    let want = if target == "rebooting" {
        "power on"
    } else {
        target
    };
    let mut first_error: Option<Option<String>> = None;
    poll_until(api, policy, want, timeout, Start::Now, || {
        let node = api.get_node(id)?;
        let power = node.power_state.as_deref().unwrap_or("unknown").to_string();
        if power == want && node.target_power_state.is_none() {
            return Ok(Poll::Done(node));
        }
        let initial = first_error.get_or_insert_with(|| node.last_error.clone());
        let new_error = node.last_error.is_some() && node.last_error != *initial;
        let reason = node_failure(&node).or_else(|| {
            (node.target_power_state.is_none() && new_error)
                .then(|| "the power action failed".to_string())
        });
        let seen = Seen {
            label: node.label(),
            state: match &node.target_power_state {
                Some(t) => format!("power state {power}, target {t}"),
                None => format!("power state {power}"),
            },
            last_error: node.last_error.clone(),
        };
        Ok(match reason {
            Some(reason) => Poll::Failed(seen, reason),
            None => Poll::Pending(seen),
        })
    })
}

impl IronicClient {
    /// Poll until the node's provision state is one of `targets` (with this client's policy).
    pub fn wait_for_provision_state(
        &self,
        id: &str,
        targets: &[&str],
        timeout: Duration,
    ) -> Result<Node, IronicError> {
        provision_state(self, &self.config().poll, id, targets, timeout)
    }

    /// Poll until the node's power state is `target` (with this client's policy).
    pub fn wait_for_power_state(
        &self,
        id: &str,
        target: &str,
        timeout: Duration,
    ) -> Result<Node, IronicError> {
        power_state(self, &self.config().poll, id, target, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_recognised() {
        let mut n = Node {
            provision_state: Some("deploy failed".into()),
            ..Default::default()
        };
        assert!(node_failure(&n).unwrap().contains("deploy failed"));
        n.provision_state = Some("error".into());
        assert!(node_failure(&n).is_some());
        n.provision_state = Some("deploying".into());
        assert!(node_failure(&n).is_none());
        n.maintenance = true;
        n.maintenance_reason = Some("disk on fire".into());
        assert!(node_failure(&n).unwrap().contains("disk on fire"));
        n.maintenance = false;
        n.fault = Some("power failure".into());
        assert!(node_failure(&n).unwrap().contains("power failure"));
    }
}
