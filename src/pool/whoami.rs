//! Which process holds a claim, and whether it still runs: written into every claim and
//! teardown, so that an operator (and `ironic_cpi pool`) can tell a live claim from one left by
//! a process that was killed (director restart, OOM kill).

use serde::{Deserialize, Serialize};

/// One CPI process, as recorded on a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22): with
    /// the pid, it tells this process from a later one that reused the pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// The director's `context.request_id` (`cpi-123456`), to find the task that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What is known of a recorded process from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Running,
    /// Recorded on this host and no longer running.
    Exited,
    /// Recorded on another host: nothing can be told from here.
    Unknown,
}

impl Process {
    /// This process.
    pub fn current(request_id: Option<&str>) -> Process {
        let pid = std::process::id();
        Process {
            host: hostname(),
            pid,
            start_ticks: start_ticks(pid),
            request_id: request_id.map(str::to_string),
        }
    }

    pub fn liveness(&self) -> Liveness {
        if self.host != hostname() {
            return Liveness::Unknown;
        }
        match (start_ticks(self.pid), self.start_ticks) {
            (None, _) => Liveness::Exited,
            (Some(now), Some(then)) if now != then => Liveness::Exited,
            _ => Liveness::Running,
        }
    }

    /// `host pid 123 (request cpi-456)`, for messages.
    pub fn describe(&self) -> String {
        match &self.request_id {
            Some(r) => format!("{} pid {} (request {r})", self.host, self.pid),
            None => format!("{} pid {}", self.host, self.pid),
        }
    }
}

/// How the liveness of a recorded process is told: by `/proc` on this host
/// ([`Process::liveness`]); the lab's model of Ironic knows which of its simulated processes it
/// killed.
pub type LivenessCheck = dyn Fn(&Process) -> Liveness + Send + Sync;

/// The real check, for [`LivenessCheck`].
pub fn on_this_host(p: &Process) -> Liveness {
    p.liveness()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Field 22 of `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses,
/// so fields are counted after its closing parenthesis.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_finished_one_has_exited() {
        let me = Process::current(Some("cpi-1"));
        assert_eq!(me.liveness(), Liveness::Running);
        assert!(me.describe().contains("cpi-1"));

        // No pid this large exists (pid_max is at most 2^22).
        let gone = Process {
            pid: u32::MAX,
            ..me.clone()
        };
        assert_eq!(gone.liveness(), Liveness::Exited);
        let reused = Process {
            start_ticks: me.start_ticks.map(|t| t + 1),
            ..me.clone()
        };
        assert_eq!(reused.liveness(), Liveness::Exited);

        let elsewhere = Process {
            host: "another-host".into(),
            ..me
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
    }
}
