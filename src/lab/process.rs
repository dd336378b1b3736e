//! Generic helpers for test labs: a free port, a child process in its own process group that is
//! stopped on drop and when the test process dies, and waits until a port or URL answers.
//!
//! Why a watchdog and not `PR_SET_PDEATHSIG`: the death signal fires when the *thread* that
//! spawned the child exits, and test harnesses run each test on its own short-lived thread, so a
//! lab kept in a `static OnceLock` would die with the first test. A tiny `sh` watchdog polls the
//! test process instead and stops the child's whole process group once it is gone (also after
//! SIGKILL, where no destructor runs).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `src/lab`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> Result<u16, String> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

/// How a [`ChildProcess`] is run and stopped.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Removed once the process group is gone (on drop and by the watchdog), unless the
    /// environment variable `IRONIC_CPI_LAB_KEEP` is set (to read logs after a failure).
    pub remove_dir: Option<PathBuf>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            grace: Duration::from_secs(5),
            remove_dir: None,
        }
    }
}

/// A long-running lab process (Ironic, the companion server, nginx) with stdout and stderr in a
/// log file. It leads its own process group, so stopping it also stops the workers it forks.
pub struct ChildProcess {
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
    opts: SpawnOptions,
    stopped: bool,
}

impl ChildProcess {
    /// Start `cmd` with output appended to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        opts: SpawnOptions,
    ) -> Result<ChildProcess, String> {
        let out = open_log(log)?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot reuse log file {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let mut p = ChildProcess {
            name: name.to_string(),
            child,
            watchdog: None,
            log: log.to_path_buf(),
            opts,
            stopped: false,
        };
        p.watchdog = Some(p.start_watchdog()?);
        Ok(p)
    }

    fn start_watchdog(&self) -> Result<Child, String> {
        const SCRIPT: &str = r#"
parent=$1; pgid=$2; grace=$3; dir=$4
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
kill -TERM "-$pgid" 2>/dev/null
i=0
while kill -0 "-$pgid" 2>/dev/null && [ "$i" -lt "$((grace * 10))" ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "-$pgid" 2>/dev/null
if [ -n "$dir" ]; then rm -rf -- "$dir"; fi
"#;
        let dir = self.removable_dir().unwrap_or_default();
        Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("lab-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.child.id().to_string())
            .arg(self.opts.grace.as_secs().max(1).to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C to the test's terminal must not kill the watchdog first.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the watchdog for {}: {e}", self.name))
    }

    fn removable_dir(&self) -> Option<PathBuf> {
        if std::env::var_os("IRONIC_CPI_LAB_KEEP").is_some() {
            return None;
        }
        self.opts.remove_dir.clone()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Leave the directory in place when this process stops (a restart reuses it).
    pub fn keep_dir(&mut self) {
        self.opts.remove_dir = None;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// `Err` with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            )),
            Err(e) => Err(format!("cannot check {}: {e}", self.name)),
        }
    }

    /// SIGTERM to the process group, SIGKILL after the grace period; then the watchdog goes.
    /// Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pgid = self.child.id() as libc::pid_t;
        signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + self.opts.grace;
        while group_alive(&mut self.child, pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if group_alive(&mut self.child, pgid) {
            signal_group(pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        if let Some(mut w) = self.watchdog.take() {
            signal_group(w.id() as libc::pid_t, libc::SIGKILL);
            let _ = w.wait();
        }
        if let Some(dir) = self.removable_dir() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Send `sig` to the process group `pgid` (a lab process's pid: each runs as its group's
/// leader); whether it was delivered.
pub fn signal_group(pgid: libc::pid_t, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    pgid > 1 && unsafe { libc::kill(-pgid, sig) } == 0
}

/// Whether any process of the group is left (the leader is reaped first, since a zombie leader
/// would still count as a member).
fn group_alive(leader: &mut Child, pgid: libc::pid_t) -> bool {
    let _ = leader.try_wait();
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0
}

fn open_log(log: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open log file {}: {e}", log.display()))
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run a command to completion with its output appended to `log`; `Err` with the log's tail.
pub fn run_logged(what: &str, mut cmd: Command, log: &Path) -> Result<(), String> {
    let out = open_log(log)?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot reuse log file {}: {e}", log.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status()
        .map_err(|e| format!("cannot run {what} ({:?}): {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({status}); last lines of {}:\n{}",
            log.display(),
            log_tail(log, 30)
        ))
    }
}

/// Wait until something accepts TCP connections at `addr`. Returns how long it took.
pub fn wait_for_tcp(
    addr: SocketAddr,
    timeout: Duration,
    mut child: Option<&mut ChildProcess>,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(started.elapsed());
        }
        if let Some(c) = child.as_deref_mut() {
            c.check_running()?;
        }
        if started.elapsed() > timeout {
            return Err(format!("nothing listened on {addr} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `url` gives any HTTP answer (whatever the status). Returns how long it took.
pub fn wait_for_http(
    url: &str,
    timeout: Duration,
    child: Option<&mut ChildProcess>,
) -> Result<Duration, String> {
    wait_for_answer(url, None, timeout, child)
}

/// [`wait_for_http`] for an `https://` URL whose certificate `ca_file` (PEM) signed.
pub fn wait_for_https(
    url: &str,
    ca_file: &Path,
    timeout: Duration,
    child: Option<&mut ChildProcess>,
) -> Result<Duration, String> {
    wait_for_answer(url, Some(ca_file), timeout, child)
}

fn wait_for_answer(
    url: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
    mut child: Option<&mut ChildProcess>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2));
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
        builder = builder.add_root_certificate(ca);
    }
    let http = builder
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    loop {
        let last = match http.get(url).send() {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) => e.without_url().to_string(),
        };
        if let Some(c) = child.as_deref_mut() {
            c.check_running()?;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{url} did not answer within {timeout:?} (last error: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_group_is_stopped_on_drop_and_dir_removed() {
        let dir = tempfile::tempdir().unwrap().keep();
        let log = dir.join("sleep.log");
        let mut cmd = Command::new("/bin/sh");
        // A forked grandchild proves the whole group goes, not just the leader.
        cmd.arg("-c").arg("sleep 60 & echo started; wait");
        let p = ChildProcess::spawn(
            "sleeper",
            cmd,
            &log,
            SpawnOptions {
                grace: Duration::from_secs(2),
                remove_dir: Some(dir.clone()),
            },
        )
        .unwrap();
        let pgid = p.pid() as libc::pid_t;
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(unsafe { libc::kill(-pgid, 0) }, 0);
        drop(p);
        assert_ne!(unsafe { libc::kill(-pgid, 0) }, 0, "process group survived");
        assert!(!dir.exists());
    }

    /// Not a test of its own: `watchdog_stops_the_group_when_the_test_process_dies` runs it in a
    /// child test process (hence ignored) to start a process group and exit without any
    /// destructor, as a test binary does with labs kept in statics.
    #[test]
    #[ignore = "helper process of watchdog_stops_the_group_when_the_test_process_dies"]
    fn watchdog_helper() {
        let dir = PathBuf::from(
            std::env::var_os("IRONIC_CPI_WATCHDOG_HELPER_DIR")
                .expect("run by watchdog_stops_the_group_when_the_test_process_dies"),
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("sleep 60 & wait");
        let p = ChildProcess::spawn(
            "orphan",
            cmd,
            &dir.join("orphan.log"),
            SpawnOptions {
                grace: Duration::from_secs(1),
                remove_dir: Some(dir.clone()),
            },
        )
        .unwrap();
        println!("PGID={}", p.pid());
        std::mem::forget(p);
        std::process::exit(0);
    }

    #[test]
    fn watchdog_stops_the_group_when_the_test_process_dies() {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::watchdog_helper",
                "--ignored",
                "--nocapture",
            ])
            .env("IRONIC_CPI_WATCHDOG_HELPER_DIR", &dir)
            .env_remove("IRONIC_CPI_LAB_KEEP")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let pgid: libc::pid_t = text
            .lines()
            .find_map(|l| l.strip_prefix("PGID="))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("helper printed no PGID: {text}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_ne!(
            unsafe { libc::kill(-pgid, 0) },
            0,
            "group {pgid} outlived its parent"
        );
        while dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !dir.exists(),
            "the watchdog should remove {}",
            dir.display()
        );
    }

    #[test]
    fn waits_see_a_listener_and_report_exits() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(wait_for_tcp(addr, Duration::from_secs(2), None).is_ok());
        drop(l);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("false.log");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("echo boom; exit 3");
        let mut p = ChildProcess::spawn("failing", cmd, &log, SpawnOptions::default()).unwrap();
        let port = free_port().unwrap();
        let e = wait_for_http(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_secs(5),
            Some(&mut p),
        )
        .unwrap_err();
        assert!(e.contains("boom"), "{e}");
    }
}
