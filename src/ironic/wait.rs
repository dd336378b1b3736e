//! Waiting for Ironic's asynchronous transitions: poll with a growing interval, stop at once on
//! a failure (`* failed`, `error`, maintenance, fault), and report what was seen.

use std::time::{Duration, Instant};

use log::debug;

use super::backoff::Backoff;
use super::client::IronicClient;
use super::error::IronicError;
use super::types::{Allocation, Node};

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

/// Sleep for the next poll interval, or as long as the deadline leaves (the last poll happens
/// right at the deadline, so a transition finishing then is still seen).
fn pause(backoff: &mut Backoff, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep(backoff.next_delay().min(deadline - now));
    true
}

impl IronicClient {
    /// Poll until the node's provision state is one of `targets` with no transition pending.
    pub fn wait_for_provision_state(
        &self,
        id: &str,
        targets: &[&str],
        timeout: Duration,
    ) -> Result<Node, IronicError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = Backoff::for_poll(&self.config().poll);
        let target: Box<str> = targets.join(" or ").into();
        loop {
            let node = self.get_node_until(id, deadline)?;
            let state = node.state();
            if targets.contains(&state) && node.target_provision_state.is_none() {
                debug!(
                    "node {}: '{state}' after {:.2} s",
                    node.label(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(node);
            }
            if let Some(reason) = node_failure(&node) {
                return Err(IronicError::WaitFailed {
                    node: node.label(),
                    state: describe_provision(&node).into(),
                    target: target.clone(),
                    last_error: node.last_error.clone(),
                    elapsed: started.elapsed(),
                    reason: reason.into(),
                });
            }
            if !pause(&mut backoff, deadline) {
                return Err(IronicError::WaitTimeout {
                    node: node.label(),
                    state: describe_provision(&node).into(),
                    target: target.clone(),
                    waited_for: timeout,
                    elapsed: started.elapsed(),
                    last_error: node.last_error.clone(),
                });
            }
        }
    }

    /// Poll until the node's power state is `target` (`rebooting` waits for `power on`).
    ///
    /// A failed power action leaves the power state unchanged, clears the pending target and sets
    /// `last_error`; a `last_error` that differs from the one seen first means this action failed.
    pub fn wait_for_power_state(
        &self,
        id: &str,
        target: &str,
        timeout: Duration,
    ) -> Result<Node, IronicError> {
        let want = if target == "rebooting" {
            "power on"
        } else {
            target
        };
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = Backoff::for_poll(&self.config().poll);
        let mut first_error: Option<Option<String>> = None;
        loop {
            let node = self.get_node_until(id, deadline)?;
            let power = node.power_state.as_deref().unwrap_or("unknown");
            if power == want && node.target_power_state.is_none() {
                return Ok(node);
            }
            let initial = first_error.get_or_insert_with(|| node.last_error.clone());
            let new_error = node.last_error.is_some() && node.last_error != *initial;
            let reason = node_failure(&node).or_else(|| {
                (node.target_power_state.is_none() && new_error)
                    .then(|| "the power action failed".to_string())
            });
            if let Some(reason) = reason {
                return Err(IronicError::WaitFailed {
                    node: node.label(),
                    state: format!("power state {power}").into(),
                    target: want.into(),
                    last_error: node.last_error.clone(),
                    elapsed: started.elapsed(),
                    reason: reason.into(),
                });
            }
            if !pause(&mut backoff, deadline) {
                return Err(IronicError::WaitTimeout {
                    node: node.label(),
                    state: format!(
                        "power state {power}{}",
                        node.target_power_state
                            .as_deref()
                            .map(|t| format!(", target {t}"))
                            .unwrap_or_default()
                    )
                    .into(),
                    target: want.into(),
                    waited_for: timeout,
                    elapsed: started.elapsed(),
                    last_error: node.last_error.clone(),
                });
            }
        }
    }

    /// Poll a new allocation until Ironic has picked a node (`active`) or given up (`error`).
    pub fn wait_for_allocation(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Allocation, IronicError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = Backoff::for_poll(&self.config().poll);
        loop {
            let a = self.get_allocation_until(id, deadline)?;
            let label = match &a.name {
                Some(n) if !n.is_empty() => format!("allocation {n} ({})", a.uuid),
                _ => format!("allocation {}", a.uuid),
            };
            match a.state.as_str() {
                "active" => return Ok(a),
                "error" => {
                    return Err(IronicError::WaitFailed {
                        node: label,
                        state: a.state.as_str().into(),
                        target: "active".into(),
                        last_error: a.last_error.clone(),
                        elapsed: started.elapsed(),
                        reason: "Ironic found no suitable node".into(),
                    })
                }
                _ => {}
            }
            if !pause(&mut backoff, deadline) {
                return Err(IronicError::WaitTimeout {
                    node: label,
                    state: a.state.as_str().into(),
                    target: "active".into(),
                    waited_for: timeout,
                    elapsed: started.elapsed(),
                    last_error: a.last_error.clone(),
                });
            }
        }
    }
}

/// `deploying (target active)`, or just the state.
fn describe_provision(node: &Node) -> String {
    match &node.target_provision_state {
        Some(t) => format!("{} (target {t})", node.state()),
        None => node.state().to_string(),
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
