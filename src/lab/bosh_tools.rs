//! The real BOSH programs the tests run against: the `bosh` CLI and the `bosh-agent`.
//!
//! Neither is on a package registry this project can reach, so they are found, in order, at
//! `$BOSH_CLI` / `$BOSH_AGENT`, next to the repository in `../shared/tools/` (where the project's
//! machines keep them, see README there), or on `PATH`. A missing program is an error that says
//! where to put it: tests that need one fail instead of passing without it.
//!
//! [`Agent`] runs the agent on a config drive's user data without changing this machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{repo_root, ChildProcess, SpawnOptions};

/// The bosh CLI (7.x).
pub fn bosh_cli() -> Result<PathBuf, String> {
    find("bosh", "BOSH_CLI")
}

/// The BOSH agent as stemcells ship it.
pub fn bosh_agent() -> Result<PathBuf, String> {
    find("bosh-agent", "BOSH_AGENT")
}

fn find(name: &str, variable: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{variable}={} is not a file", path.display()))
        };
    }
    let shared = repo_root().join("../shared/tools").join(name);
    if shared.is_file() {
        return Ok(shared);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    Err(format!(
        "the real `{name}` is needed: set {variable} to it, or put it at {} or on PATH",
        shared.display()
    ))
}

/// The real agent booted on a config drive's user data, with nothing on this machine to
/// change: its `dummy` platform (no networking, disks or users touched) and `dummy` job
/// supervisor (no monit, whose alert listener takes a fixed port), and a `File` settings source
/// holding the user data. Current agents decode the config drive's `ec2/latest/user-data` and
/// such a file alike (`json.Unmarshal` into `settings.Settings`).
pub struct Agent {
    pub process: ChildProcess,
    /// The agent's base directory (its /var/vcap): `bosh/settings.json` holds the settings as
    /// the agent decoded them.
    pub base: PathBuf,
}

impl Agent {
    /// Start the agent in `dir` (which must exist) on `user_data`; its log is `dir/agent.log`.
    pub fn start(dir: &Path, user_data: &[u8]) -> Result<Agent, String> {
        let binary = bosh_agent()?;
        let write = |path: &Path, data: &[u8]| {
            std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))
        };
        let settings = dir.join("user-data.json");
        write(&settings, user_data)?;
        let config = dir.join("agent.json");
        let agent_json = json!({"Platform": {"Linux": {}},
            "Infrastructure": {"Settings": {
                "Sources": [{"Type": "File", "SettingsPath": settings}],
                "UseRegistry": false}}});
        write(&config, agent_json.to_string().as_bytes())?;
        let base = dir.join("base");
        std::fs::create_dir_all(base.join("bosh")).map_err(|e| format!("{e}"))?;
        let mut cmd = Command::new(binary);
        cmd.args(["-P", "dummy", "-M", "dummy", "-C"])
            .arg(&config)
            .arg("-b")
            .arg(&base);
        let process = ChildProcess::spawn(
            "bosh-agent",
            cmd,
            &dir.join("agent.log"),
            SpawnOptions {
                grace: Duration::from_secs(2),
                remove_dir: None,
            },
        )?;
        Ok(Agent { process, base })
    }

    /// The settings as the agent decoded them (it saves them before starting its mbus).
    pub fn settings(&self) -> Result<Value, String> {
        let path = self.base.join("bosh/settings.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// The agent's ERROR lines (its log is mostly file-system chatter).
    pub fn errors(&self) -> String {
        self.log()
            .lines()
            .filter(|l| l.contains("ERROR") && !l.contains("syslog"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
