//! An in-memory model of Ironic's node state machine, and a deterministic scheduler that runs
//! simulated CPI processes against it one Ironic request at a time.
//!
//! It exists for what the real Ironic cannot be made to do on demand, exhaustively: stop a
//! create_vm or delete_vm at any request (before it is sent, or after it was applied with its
//! answer lost, or by killing the process), and interleave concurrent calls request by request.
//! The tests that use it stand beside those against the real Ironic, never instead of them.
//!
//! Every simulated process runs on its own thread but only one moves at a time: each Ironic
//! request (and each pause between polls) is a point where the scheduler picks who goes next,
//! or lets the conductor advance a node's transition. [`explore`] enumerates every schedule
//! that deviates from a default order at most `k` times.

mod sched;
pub mod world;

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use ironic_cpi::ironic::{Ironic, IronicError, Node, NodeQuery, PatchOp, Port, PortQuery};
use ironic_cpi::pool::record::VmRecord;
use ironic_cpi::pool::whoami::{Liveness, LivenessCheck, Process};

use sched::Sched;
pub use world::{Mutation, State, Step};

/// The unwinding payload of a simulated process killed mid-call (SIGKILL: nothing after it
/// runs, no rollback).
pub struct Killed;

/// What happens to one request of a simulated process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request never reaches Ironic (connection refused after the client's retries).
    NotSent,
    /// Ironic applies the request, and the answer is lost (connection dropped, timeout).
    AnswerLost,
    /// The process dies before sending.
    KillBefore,
    /// The process dies after Ironic applied the request, before reading the answer.
    KillAfter,
    /// The request is held back (in the network, behind a lock) until nothing else can move,
    /// then applied: the world has moved on meanwhile.
    Stall,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::NotSent,
        Fault::AnswerLost,
        Fault::KillBefore,
        Fault::KillAfter,
    ];
}

/// Which request of a simulated process a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The n-th request (1-based).
    Nth(usize),
    /// The first request whose description starts with this (`provision deleted`,
    /// `PATCH /instance_uuid`).
    First(&'static str),
    /// The n-th request (1-based) whose description starts with this.
    NthOf(&'static str, usize),
}

/// The host name simulated processes record (so their liveness is the model's to tell).
pub const MODEL_HOST: &str = "ironic-model";

/// One simulated process's view of the model: it implements [`Ironic`].
pub struct ModelIronic {
    world: Arc<Mutex<State>>,
    sched: Arc<Sched>,
    actor: usize,
    id: usize,
    fault: Option<(At, Fault)>,
    fault_spent: std::sync::atomic::AtomicBool,
    /// Requests seen so far that match an `At::NthOf` prefix.
    matching: AtomicUsize,
    calls: AtomicUsize,
    clock: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A killed process unwinds while holding nothing, but never let poisoning hide a state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ModelIronic {
    /// The process this handle stands for, as records carry it.
    pub fn process(&self) -> Process {
        Process {
            host: MODEL_HOST.into(),
            pid: self.id as u32,
            start_ticks: None,
            request_id: Some(format!("model-{}", self.id)),
        }
    }

    /// Requests this process sent so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn request<T>(
        &self,
        mutates: Option<&str>,
        what: &str,
        f: impl FnOnce(&mut State) -> Result<T, IronicError>,
    ) -> Result<T, IronicError> {
        let n = self.calls.load(Ordering::SeqCst) + 1;
        let hit = |at: &At| match at {
            At::Nth(k) => *k == n,
            At::First(prefix) => what.starts_with(prefix),
            At::NthOf(prefix, k) => {
                what.starts_with(prefix) && {
                    let seen = self.matching.fetch_add(1, Ordering::SeqCst) + 1;
                    seen == *k
                }
            }
        };
        let fault = match self.fault {
            Some((at, f)) if hit(&at) && !self.fault_spent.swap(true, Ordering::SeqCst) => Some(f),
            _ => None,
        };
        if fault == Some(Fault::Stall) {
            self.sched.stall(self.actor);
        }
        self.sched.park(self.actor, false);
        self.calls.fetch_add(1, Ordering::SeqCst);
        match fault {
            Some(Fault::KillBefore) => resume_unwind(Box::new(Killed)),
            Some(Fault::NotSent) => {
                return Err(IronicError::Transport {
                    service: "Ironic",
                    method: what.into(),
                    url: "model".into(),
                    message: "model: connection refused".into(),
                    not_sent: true,
                })
            }
            _ => {}
        }
        let result = {
            let mut w = lock(&self.world);
            w.requests += 1;
            let before = mutates
                .and_then(|id| w.find(id))
                .map(|n| (n.uuid.clone(), VmRecord::read(n).map(|r| r.vm_id)));
            let r = f(&mut w);
            if r.is_ok() {
                if let Some((node, record_before)) = before {
                    let record_after = w.nodes.get(&node).and_then(VmRecord::read).map(|r| r.vm_id);
                    w.mutations.push(Mutation {
                        actor: self.id,
                        node,
                        what: what.into(),
                        record_before,
                        record_after,
                    });
                }
            }
            let outcome = match (&r, fault) {
                (Ok(_), Some(f)) => format!("ok, then {f:?}"),
                (Ok(_), None) => "ok".to_string(),
                (Err(e), _) => format!("{e}"),
            };
            w.journal.push(format!(
                "{} #{n} {what} {}: {outcome}",
                self.id,
                mutates.unwrap_or("")
            ));
            r
        };
        match fault {
            Some(Fault::AnswerLost) => Err(IronicError::Transport {
                service: "Ironic",
                method: what.into(),
                url: "model".into(),
                message: "model: the answer was lost".into(),
                not_sent: false,
            }),
            Some(Fault::KillAfter) => resume_unwind(Box::new(Killed)),
            _ => result,
        }
    }
}

impl Ironic for ModelIronic {
    fn get_node(&self, id: &str) -> Result<Node, IronicError> {
        self.request(None, "GET node", |w| {
            w.find(id).cloned().ok_or_else(|| IronicError::NotFound {
                resource: "node".into(),
                id: id.into(),
                message: format!("Node {id} could not be found."),
            })
        })
    }
    /// One request, one page: the model's lists are small, and each request is one point where
    /// the scheduler may let others run. The page is handed over after the world is unlocked.
    fn node_pages(
        &self,
        q: &NodeQuery,
        each: &mut dyn FnMut(Vec<Node>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        let page = self.request(None, "GET nodes", |w| Ok(w.list_nodes(q)))?;
        if !page.is_empty() {
            let _ = each(page);
        }
        Ok(())
    }
    fn port_pages(
        &self,
        q: &PortQuery,
        each: &mut dyn FnMut(Vec<Port>) -> ControlFlow<()>,
    ) -> Result<(), IronicError> {
        let page = self.request(None, "GET ports", |w| Ok(w.list_ports(q)))?;
        if !page.is_empty() {
            let _ = each(page);
        }
        Ok(())
    }
    fn microversion_in_use(&self) -> (u32, u32) {
        lock(&self.world).microversion
    }
    fn create_node(&self, _body: &Value) -> Result<Node, IronicError> {
        self.request(None, "POST node", |_| {
            Err(IronicError::BadRequest {
                message: "the model does not enroll nodes".into(),
            })
        })
    }
    fn patch_node(&self, id: &str, ops: &[PatchOp]) -> Result<Node, IronicError> {
        let mut paths: Vec<&str> = ops.iter().map(|o| o.path.as_str()).collect();
        paths.dedup();
        let what = format!("PATCH {}", paths.join(" "));
        self.request(Some(id), &what, |w| w.patch(id, ops))
    }
    fn delete_node(&self, id: &str) -> Result<(), IronicError> {
        self.request(Some(id), "DELETE node", |w| w.delete_node(id))
    }
    fn set_provision_state(
        &self,
        id: &str,
        target: &str,
        body: Option<Value>,
    ) -> Result<(), IronicError> {
        let what = format!("provision {target}");
        self.request(Some(id), &what, |w| w.provision(id, target, body.as_ref()))
    }
    fn set_power_state(&self, id: &str, target: &str) -> Result<(), IronicError> {
        self.request(Some(id), "power", |w| {
            let node = w
                .nodes
                .values_mut()
                .find(|n| n.uuid == id || n.name.as_deref() == Some(id))
                .ok_or_else(|| IronicError::NotFound {
                    resource: "node".into(),
                    id: id.into(),
                    message: "no such node".into(),
                })?;
            node.power_state = Some(
                if target == "power off" {
                    "power off"
                } else {
                    "power on"
                }
                .into(),
            );
            Ok(())
        })
    }
    fn validate_node(&self, id: &str) -> Result<Value, IronicError> {
        self.request(None, "validate", |w| {
            w.find(id)
                .map(|_| {
                    serde_json::json!({"power": {"result": true}, "management": {"result": true},
                                             "boot": {"result": true}, "deploy": {"result": true}})
                })
                .ok_or_else(|| IronicError::NotFound {
                    resource: "node".into(),
                    id: id.into(),
                    message: "no such node".into(),
                })
        })
    }
    fn create_port(
        &self,
        _node_uuid: &str,
        _address: &str,
        _extra: Option<Value>,
    ) -> Result<Port, IronicError> {
        self.request(None, "POST port", |_| {
            Err(IronicError::BadRequest {
                message: "the model does not enroll ports".into(),
            })
        })
    }
    fn request_count(&self) -> u64 {
        self.calls() as u64
    }
    fn now(&self) -> Duration {
        *lock(&self.clock)
    }
    fn sleep(&self, d: Duration) {
        *lock(&self.clock) += d;
        self.sched.park(self.actor, true);
    }
}

/// One decision of a run: how many options there were, the default, what was chosen.
#[derive(Debug, Clone, Copy)]
struct Decision {
    options: usize,
    default: usize,
    chosen: usize,
}

/// Chooses at each decision point: the given prefix first, then the default.
pub struct Explorer {
    prefix: Vec<usize>,
    trace: Vec<Decision>,
}

impl Explorer {
    fn new(prefix: Vec<usize>) -> Explorer {
        Explorer {
            prefix,
            trace: Vec::new(),
        }
    }

    fn choose(&mut self, options: usize, default: usize) -> usize {
        let pos = self.trace.len();
        let chosen = match self.prefix.get(pos) {
            Some(&c) => {
                assert!(
                    c < options,
                    "the model replayed differently: decision {pos} has {options} options, the \
                     schedule asks for option {c}"
                );
                c
            }
            None => default,
        };
        self.trace.push(Decision {
            options,
            default,
            chosen,
        });
        chosen
    }

    /// Decisions taken in this run.
    pub fn steps(&self) -> usize {
        self.trace.len()
    }
}

/// What [`explore`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Explored {
    pub runs: usize,
    pub decisions: usize,
}

/// Run `scenario` once per schedule that deviates from the default order at most
/// `max_deviations` times (depth first), stopping after `max_runs`.
pub fn explore(
    max_deviations: usize,
    max_runs: usize,
    mut scenario: impl FnMut(&mut Explorer),
) -> Explored {
    let mut stack: Vec<Vec<usize>> = vec![Vec::new()];
    let mut done = Explored::default();
    while let Some(prefix) = stack.pop() {
        if done.runs >= max_runs {
            break;
        }
        let mut ex = Explorer::new(prefix.clone());
        scenario(&mut ex);
        done.runs += 1;
        done.decisions += ex.trace.len();
        let mut deviations = ex.trace[..prefix.len().min(ex.trace.len())]
            .iter()
            .filter(|d| d.chosen != d.default)
            .count();
        for i in prefix.len()..ex.trace.len() {
            if deviations >= max_deviations {
                break;
            }
            let d = ex.trace[i];
            for alt in (0..d.options).filter(|a| *a != d.chosen) {
                let mut p: Vec<usize> = ex.trace[..i].iter().map(|d| d.chosen).collect();
                p.push(alt);
                stack.push(p);
            }
            // Beyond the prefix every choice is the default: the count stays.
            deviations += usize::from(d.chosen != d.default);
        }
    }
    done
}

/// A simulated process: it gets its own handle on the model.
pub type Actor<'s, T> = Box<dyn FnOnce(&ModelIronic) -> T + Send + 's>;

/// An actor, and the fault at one of its requests, if any.
pub type Faulty<'s, T> = (Actor<'s, T>, Option<(At, Fault)>);

/// A check of the model's state; its error says what is wrong.
pub type Invariant<'e> = Box<dyn Fn(&State) -> Result<(), String> + 'e>;

/// The model, the schedule being run, and what the test wants checked after every step.
pub struct Env<'e> {
    pub world: Arc<Mutex<State>>,
    ex: &'e mut Explorer,
    next_id: usize,
    /// Processes that have exited (killed, or done with their call).
    killed: Arc<Mutex<BTreeSet<u32>>>,
    /// Checked after every step; what it returns is collected in `violations`.
    pub invariant: Invariant<'e>,
    pub violations: Vec<String>,
}

enum Choice {
    Actor(usize),
    Event(String),
}

impl<'e> Env<'e> {
    pub fn new(state: State, ex: &'e mut Explorer) -> Env<'e> {
        Env {
            world: Arc::new(Mutex::new(state)),
            ex,
            next_id: 1,
            killed: Arc::new(Mutex::new(BTreeSet::new())),
            invariant: Box::new(|_| Ok(())),
            violations: Vec::new(),
        }
    }

    /// A copy of the model's state.
    pub fn state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.world))
    }

    pub fn state_mut<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut lock(&self.world))
    }

    /// Whether a simulated process still runs: killed ones have exited.
    pub fn liveness(&self) -> Arc<LivenessCheck> {
        let killed = self.killed.clone();
        Arc::new(move |p: &Process| {
            if p.host != MODEL_HOST {
                Liveness::Unknown
            } else if lock(&killed).contains(&p.pid) {
                Liveness::Exited
            } else {
                Liveness::Running
            }
        })
    }

    /// The id the next actor gets (its `Process::pid`).
    pub fn next_id(&self) -> usize {
        self.next_id
    }

    /// Run `actors` concurrently, each with an optional fault at one of its requests,
    /// until they have all finished and the conductor is idle. `None` for a killed actor.
    pub fn run<'s, T: Send + 's>(&mut self, actors: Vec<Faulty<'s, T>>) -> Vec<Option<T>> {
        let sched = Arc::new(Sched::new(actors.len()));
        let first_id = self.next_id;
        self.next_id += actors.len();
        let killed = self.killed.clone();
        let world = self.world.clone();
        let ex = &mut *self.ex;
        let invariant = &self.invariant;
        let violations = &mut self.violations;
        std::thread::scope(|scope| {
            let handles: Vec<_> = actors
                .into_iter()
                .enumerate()
                .map(|(i, (f, fault))| {
                    let api = ModelIronic {
                        world: world.clone(),
                        sched: sched.clone(),
                        actor: i,
                        id: first_id + i,
                        fault,
                        fault_spent: std::sync::atomic::AtomicBool::new(false),
                        matching: AtomicUsize::new(0),
                        calls: AtomicUsize::new(0),
                        clock: Mutex::new(Duration::ZERO),
                    };
                    let sched = sched.clone();
                    let killed = killed.clone();
                    scope.spawn(move || {
                        sched.park(i, false);
                        let r = catch_unwind(AssertUnwindSafe(|| f(&api)));
                        // A CPI process ends with its call: whatever it recorded, it has exited.
                        lock(&killed).insert(api.id as u32);
                        let out = match r {
                            Ok(v) => Some(v),
                            Err(p) if p.is::<Killed>() => None,
                            Err(p) => {
                                sched.finish(i);
                                resume_unwind(p)
                            }
                        };
                        sched.finish(i);
                        out
                    })
                })
                .collect();

            let mut last: Option<usize> = None;
            loop {
                let parked = sched.settle();
                {
                    let w = lock(&world);
                    if let Err(v) = invariant(&w) {
                        violations.push(v);
                    }
                }
                let events: Vec<String> = lock(&world).pending.keys().cloned().collect();
                let free: Vec<(usize, bool)> = parked
                    .iter()
                    .copied()
                    .filter(|(a, _)| !sched.is_stalled(*a))
                    .collect();
                // Held-back requests go once nothing else can move.
                let parked = if free.is_empty() && events.is_empty() {
                    parked.iter().for_each(|(a, _)| sched.unstall(*a));
                    parked
                } else {
                    free
                };
                let mut options: Vec<Choice> =
                    parked.iter().map(|(a, _)| Choice::Actor(*a)).collect();
                options.extend(events.into_iter().map(Choice::Event));
                if options.is_empty() {
                    break;
                }
                let continuing =
                    last.and_then(|l| parked.iter().position(|(a, slept)| *a == l && !slept));
                let first_event = parked.len();
                let default = continuing.unwrap_or(if options.len() > first_event {
                    first_event
                } else {
                    parked
                        .iter()
                        .position(|(a, _)| last.is_none_or(|l| *a > l))
                        .unwrap_or(0)
                });
                match &options[ex.choose(options.len(), default)] {
                    Choice::Actor(a) => {
                        last = Some(*a);
                        sched.resume(*a);
                    }
                    Choice::Event(uuid) => {
                        let mut w = lock(&world);
                        let step = w.pending.get(uuid).cloned();
                        w.journal.push(format!("conductor {uuid}: {step:?}"));
                        w.fire(uuid)
                    }
                }
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| resume_unwind(p)))
                .collect()
        })
    }
}
