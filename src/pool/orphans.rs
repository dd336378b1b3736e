//! Claims nobody will finish. A create_vm killed after its claim (director restart, OOM kill)
//! leaves a reserved idle node; one killed during the deploy wait leaves an `active` node running
//! an agent nobody knows; a teardown killed halfway leaves a node marked `deleting`. Such nodes
//! stay out of the pool (their record says a VM owns them) until an operator frees them:
//! `ironic_cpi pool` marks them stale and says why, `ironic_cpi free NODE` returns one.
//!
//! A claim is stale when the process that holds it has exited (same host: its pid is gone or
//! reused), or when neither its record nor the node has moved for `stale_after` while the node
//! sits in a stable state.

use std::time::{Duration, SystemTime};

use crate::ironic::{Node, PatchOp};
use crate::pool::confirm;
use crate::pool::record::{has_vm_record, parse_time, Phase, VmRecord, VM_KEY};
use crate::pool::teardown::Teardown;
use crate::pool::whoami::{Liveness, LivenessCheck};

/// How long a claim may sit without progress before `pool` calls it stale: far longer than any
/// step of create_vm or delete_vm that does not show as a transition on the node.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Who holds a node, as an operator needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Holding {
    Free,
    /// A VM of this CPI, in some phase; `stale` says why nobody will finish it, if so.
    Vm {
        record: Box<VmRecord>,
        stale: Option<String>,
    },
    /// `extra.bosh_vm` that this CPI cannot read (written by hand, or by another version).
    Unreadable,
    /// An `instance_uuid` without a VM record: a claim in its first milliseconds, one whose
    /// process died before recording the VM, or another user of Ironic.
    Bare {
        instance_uuid: String,
        stale: Option<String>,
    },
}

impl Holding {
    pub fn stale_reason(&self) -> Option<&str> {
        match self {
            Holding::Vm { stale, .. } | Holding::Bare { stale, .. } => stale.as_deref(),
            _ => None,
        }
    }
}

/// Judge the node at `now`.
pub fn judge(
    node: &Node,
    now: SystemTime,
    stale_after: Duration,
    liveness: &LivenessCheck,
) -> Holding {
    if has_vm_record(node) {
        let Some(record) = VmRecord::read(node) else {
            return Holding::Unreadable;
        };
        let stale = vm_staleness(node, &record, now, stale_after, liveness);
        return Holding::Vm {
            record: Box::new(record),
            stale,
        };
    }
    let Some(instance_uuid) = node.instance_uuid.clone() else {
        return Holding::Free;
    };
    // Claims of this CPI are UUIDv7: they carry the time they were made.
    let stale = claim_time(&instance_uuid).and_then(|made| {
        let idle = since(now, made.max(node_moved(node).unwrap_or(made)));
        (!node.in_transition() && idle >= stale_after).then(|| {
            format!(
                "instance_uuid set {} ago without a VM record: a create_vm that died between \
                 claiming and recording, unless another user of Ironic set it",
                minutes(idle)
            )
        })
    });
    Holding::Bare {
        instance_uuid,
        stale,
    }
}

fn vm_staleness(
    node: &Node,
    record: &VmRecord,
    now: SystemTime,
    stale_after: Duration,
    liveness: &LivenessCheck,
) -> Option<String> {
    let (holder, doing) = match (&record.teardown, record.phase) {
        (Some(mark), Phase::Deleting) => (&mark.by, "its teardown"),
        (_, Phase::Active) => {
            // A VM the director holds, unless a teardown undeployed it and stopped before it
            // could hold the node again (nothing records that teardown's process).
            let undeployed = node.instance_uuid.is_none()
                && matches!(node.state(), "available" | "manageable" | "clean failed");
            if !undeployed || node.in_transition() {
                return None;
            }
            let idle = since(now, node_moved(node)?);
            return (idle >= stale_after).then(|| {
                format!(
                    "VM {} was undeployed (node {}) {} ago and its teardown stopped there: a \
                     retried delete_vm of its cid finishes it",
                    record.vm_id,
                    node.state(),
                    minutes(idle)
                )
            });
        }
        (_, Phase::Deleting) => (&record.claimed_by, "the teardown"),
        _ => (&record.claimed_by, "its create_vm"),
    };
    if liveness(holder) == Liveness::Exited {
        return Some(format!(
            "{doing} ({}) has exited; phase {}, node {}",
            holder.describe(),
            record.phase.as_str(),
            node.state()
        ));
    }
    if node.in_transition() {
        return None;
    }
    let last = [parse_time(&record.updated_at), node_moved(node)]
        .into_iter()
        .flatten()
        .max()?;
    let idle = since(now, last);
    (idle >= stale_after).then(|| {
        format!(
            "no progress for {} (phase {}, node {}, by {})",
            minutes(idle),
            record.phase.as_str(),
            node.state(),
            holder.describe()
        )
    })
}

/// The last time Ironic changed the node's provision state.
fn node_moved(node: &Node) -> Option<SystemTime> {
    node.provision_updated_at.as_deref().and_then(parse_time)
}

fn claim_time(instance_uuid: &str) -> Option<SystemTime> {
    let u = uuid::Uuid::try_parse(instance_uuid).ok()?;
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

fn minutes(d: Duration) -> String {
    let m = d.as_secs() / 60;
    if m >= 120 {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

/// States in which a VM's agent may be running.
const RUNNING_STATES: [&str; 3] = ["active", "wait call-back", "rescue"];

/// What `free` did.
pub struct Freed {
    pub steps: Vec<String>,
}

/// Return one node whose claim nobody will finish, with `teardown` (its `force` applies here
/// too). Refuses, unless forced: a claim that is not stale (its process may still finish it), a
/// VM the director knows (phase `active`), a node where an agent may be running, and an
/// `instance_uuid` that is not this CPI's. `before` runs right before a VM's node is torn down
/// (to remove its files outside Ironic).
pub fn free(
    teardown: &Teardown,
    node_id: &str,
    stale_after: Duration,
    before: &dyn Fn(&Node),
) -> Result<Freed, String> {
    let api = teardown.api;
    let force = teardown.force;
    let node = api
        .get_node(node_id)
        .map_err(|e| format!("reading node {node_id}: {e}"))?;
    let label = node.label();
    let refuse = |why: String| Err(format!("{why}; run again with --force to free it anyway"));
    match judge(&node, SystemTime::now(), stale_after, teardown.liveness) {
        Holding::Free => Ok(Freed {
            steps: vec![format!("node {label} is free: nothing to do")],
        }),
        Holding::Unreadable => Err(format!(
            "node {label} carries an extra.{VM_KEY} this CPI cannot read; look at it with \
             `baremetal node show {}` and fix it by hand",
            node.uuid
        )),
        Holding::Bare {
            instance_uuid,
            stale,
        } => {
            if stale.is_none() && !force {
                return refuse(format!(
                    "node {label} is held by instance_uuid {instance_uuid} with no VM record, \
                     and that claim is not stale: a create_vm may be about to record its VM, or \
                     another user of Ironic holds the node"
                ));
            }
            let uuid = node.uuid.as_str();
            let ops = [PatchOp::remove("/instance_uuid")];
            confirm::change(
                api,
                uuid,
                "removing a stale claim",
                || api.patch_node(uuid, &ops),
                |n| n.instance_uuid.as_deref() != Some(instance_uuid.as_str()),
            )
            .map_err(|e| format!("removing instance_uuid of node {label}: {e}"))?;
            Ok(Freed {
                steps: vec![format!(
                    "removed instance_uuid {instance_uuid} from node {label}: it is free again"
                )],
            })
        }
        Holding::Vm { record, stale } => {
            let cid = record.cid(&node.uuid);
            if !force {
                if record.phase == Phase::Active && record.teardown.is_none() {
                    return refuse(format!(
                        "node {label} holds VM {cid} (agent {}), deployed and returned to the \
                         director; delete it through BOSH (`bosh delete-vm {cid}`)",
                        record.agent_id
                    ));
                }
                if stale.is_none() {
                    return refuse(format!(
                        "node {label} holds VM {cid} in phase {} and the claim is live (its \
                         process may still finish it; `ironic_cpi pool` says when it turns stale)",
                        record.phase.as_str()
                    ));
                }
                if RUNNING_STATES.contains(&node.state()) && record.phase != Phase::Deleting {
                    return refuse(format!(
                        "node {label} is {}: the agent of VM {cid} (agent {}) may be running \
                         there, unknown to the director",
                        node.state(),
                        record.agent_id
                    ));
                }
            }
            before(&node);
            let report = teardown
                .run(&cid)
                .map_err(|e| format!("returning node {label}: {}", e.message))?;
            Ok(Freed {
                steps: report.steps,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::whoami::{on_this_host, Process};
    use serde_json::json;

    fn node_with(record: Option<&VmRecord>, state: &str) -> Node {
        let mut n = Node {
            uuid: "7a3e5a52-0d3c-4c55-9d2c-3f1b0a6c2b11".into(),
            provision_state: Some(state.into()),
            ..Default::default()
        };
        if let Some(r) = record {
            n.extra.insert(VM_KEY.into(), r.container());
            n.instance_uuid = Some(r.vm_id.clone());
        }
        n
    }

    #[test]
    fn live_claims_are_not_stale_and_idle_or_orphaned_ones_are() {
        let fresh = node_with(None, "available");
        let me = Process::current(None);
        let mut record = VmRecord::new("0193", "agent", &fresh, me.clone(), None);
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);

        let live = node_with(Some(&record), "available");
        assert_eq!(judge(&live, now, hour, &on_this_host).stale_reason(), None);
        let later = now + 2 * hour;
        let idle = judge(&live, later, hour, &on_this_host);
        assert!(
            idle.stale_reason().unwrap().contains("no progress"),
            "{idle:?}"
        );

        // A transition in progress is progress.
        let mut moving = live.clone();
        moving.target_provision_state = Some("active".into());
        assert_eq!(
            judge(&moving, later, hour, &on_this_host).stale_reason(),
            None
        );

        // A process that exited is stale at once.
        record.claimed_by = Process {
            pid: u32::MAX,
            ..me
        };
        let orphan = node_with(Some(&record), "active");
        let why = judge(&orphan, now, hour, &on_this_host);
        assert!(
            why.stale_reason().unwrap().contains("has exited"),
            "{why:?}"
        );

        // A VM the director knows is never stale.
        let active = node_with(Some(&record.in_phase(Phase::Active)), "active");
        assert_eq!(
            judge(&active, later, hour, &on_this_host).stale_reason(),
            None
        );
    }

    #[test]
    fn bare_claims_of_this_cpi_turn_stale_and_foreign_ones_never() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let mut n = node_with(None, "available");
        n.instance_uuid = Some(uuid::Uuid::now_v7().to_string());
        assert_eq!(judge(&n, now, hour, &on_this_host).stale_reason(), None);
        assert!(judge(&n, now + 2 * hour, hour, &on_this_host)
            .stale_reason()
            .unwrap()
            .contains("without a VM record"));
        n.instance_uuid = Some(uuid::Uuid::new_v4().to_string());
        assert_eq!(
            judge(&n, now + 2 * hour, hour, &on_this_host).stale_reason(),
            None
        );
        assert_eq!(
            judge(&node_with(None, "available"), now, hour, &on_this_host),
            Holding::Free
        );
        let mut unreadable = node_with(None, "available");
        unreadable.extra.insert(VM_KEY.into(), json!(7));
        assert_eq!(
            judge(&unreadable, now, hour, &on_this_host),
            Holding::Unreadable
        );
    }
}
