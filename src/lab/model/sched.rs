//! One baton for the simulated processes: each runs only while it holds it, and gives it back
//! at its next Ironic request or pause; the harness decides who gets it next.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Starting,
    /// Waiting for the baton; `slept` when it paused between polls rather than at a request.
    Parked {
        slept: bool,
    },
    Running,
    Done,
}

pub struct Sched {
    status: Mutex<Vec<Status>>,
    /// Actors whose next request is held back until nothing else can move.
    stalled: Mutex<Vec<bool>>,
    changed: Condvar,
}

impl Sched {
    pub fn new(actors: usize) -> Sched {
        Sched {
            status: Mutex::new(vec![Status::Starting; actors]),
            stalled: Mutex::new(vec![false; actors]),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Status>> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Actor side: give the baton back and wait to get it again.
    pub fn park(&self, me: usize, slept: bool) {
        let mut s = self.lock();
        s[me] = Status::Parked { slept };
        self.changed.notify_all();
        while s[me] != Status::Running {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn finish(&self, me: usize) {
        let mut s = self.lock();
        s[me] = Status::Done;
        self.changed.notify_all();
    }

    /// Hold `me`'s next request back until nothing else can move (a request stuck in the
    /// network while the rest of the world goes on).
    pub fn stall(&self, me: usize) {
        self.stalled.lock().unwrap_or_else(|p| p.into_inner())[me] = true;
    }

    pub fn is_stalled(&self, actor: usize) -> bool {
        self.stalled.lock().unwrap_or_else(|p| p.into_inner())[actor]
    }

    pub fn unstall(&self, actor: usize) {
        self.stalled.lock().unwrap_or_else(|p| p.into_inner())[actor] = false;
    }

    /// Harness side: wait until nobody runs, then the parked actors (and whether they slept).
    pub fn settle(&self) -> Vec<(usize, bool)> {
        let mut s = self.lock();
        while s
            .iter()
            .any(|st| matches!(st, Status::Starting | Status::Running))
        {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.iter()
            .enumerate()
            .filter_map(|(i, st)| match st {
                Status::Parked { slept } => Some((i, *slept)),
                _ => None,
            })
            .collect()
    }

    /// Hand the baton to `actor`.
    pub fn resume(&self, actor: usize) {
        let mut s = self.lock();
        s[actor] = Status::Running;
        self.changed.notify_all();
    }
}
