//! A real OpenStack Keystone 30.0.0 for tests: SQLite, fernet tokens and credential keys made by
//! `keystone-manage`, its WSGI application served by cheroot on loopback, in a fresh directory per
//! lab.
//!
//! `start` bootstraps it (admin user, `RegionOne`, the identity endpoint) and then sets up, through
//! Keystone's own API, what an OpenStack cloud gives a BOSH operator: a project owning the
//! bare-metal nodes, a user with the `member` role in it and an application credential of that
//! user; and a service user in the `service` project for Ironic's keystonemiddleware. The
//! `baremetal` service and its endpoints are registered once Ironic's URL is known.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

use super::ironic::KeystoneAuthtoken;
use super::process::{self, ChildProcess, SpawnOptions};

/// The region of every endpoint `keystone-manage bootstrap` and [`KeystoneLab`] create.
pub const REGION: &str = "RegionOne";
/// A second region, whose `baremetal` endpoint leads nowhere: a client that ignores
/// `region_name` may pick it.
pub const OTHER_REGION: &str = "RegionTwo";
/// The project owning the lab's bare-metal nodes, and its user (role `member`).
pub const CPI_PROJECT: &str = "bosh";
pub const CPI_USER: &str = "bosh-cpi";
/// Ironic's service user (role `service` in the `service` project, as in a real cloud).
pub const SERVICE_PROJECT: &str = "service";
pub const SERVICE_USER: &str = "ironic";

#[derive(Debug, Clone)]
pub struct KeystoneLabOptions {
    /// Defaults to `$IRONIC_CPI_KEYSTONE_VENV`, else `<repo>/.cache/keystone-venv` (installed on
    /// demand by `scripts/lab/install-keystone`).
    pub venv: Option<PathBuf>,
    /// `[token] expiration` in seconds.
    pub token_expiration: u32,
    pub start_timeout: Duration,
}

impl Default for KeystoneLabOptions {
    fn default() -> Self {
        KeystoneLabOptions {
            venv: None,
            token_expiration: 3600,
            start_timeout: Duration::from_secs(120),
        }
    }
}

/// A user and the project its tokens are scoped to.
#[derive(Debug, Clone)]
pub struct LabUser {
    pub id: String,
    pub name: String,
    pub password: String,
    pub project_id: String,
    pub project_name: String,
}

#[derive(Debug, Clone)]
pub struct LabAppCredential {
    pub id: String,
    pub secret: String,
}

/// Where the time of [`KeystoneLab::start`] went.
#[derive(Debug, Clone, Copy)]
pub struct KeystoneTimings {
    /// `keystone-manage db_sync`, `fernet_setup`, `credential_setup` and `bootstrap`, in one
    /// process.
    pub manage: Duration,
    /// From spawning the server until `GET /v3` answered (its start overlaps the setup).
    pub serve: Duration,
    /// Projects, users, role assignments and the application credential, through the API.
    pub populate: Duration,
    pub total: Duration,
}

/// A Keystone server process on the lab's database and keys.
pub struct KeystoneServer {
    /// `http://127.0.0.1:PORT`, without `/v3`.
    pub url: String,
    pub started_in: Duration,
    process: ChildProcess,
}

impl KeystoneServer {
    /// The URL clients authenticate at (`…/v3`).
    pub fn auth_url(&self) -> String {
        format!("{}/v3", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A running, populated Keystone. Stopped on drop, and by a watchdog when the test process exits.
pub struct KeystoneLab {
    pub server: KeystoneServer,
    pub dir: PathBuf,
    pub timings: KeystoneTimings,
    /// The CPI's user, in [`CPI_PROJECT`] with the `member` role.
    pub cpi_user: LabUser,
    /// An application credential of [`KeystoneLab::cpi_user`], scoped to its project.
    pub app_credential: LabAppCredential,
    /// Ironic's service user.
    pub service_user: LabUser,
    admin_password: String,
    member_role_id: String,
    venv: PathBuf,
    http: Client,
}

/// A Keystone lab whose port and passwords are chosen but which is not started yet: Ironic can
/// be configured for it (and started at the same time) before it answers.
pub struct KeystonePlan {
    opts: KeystoneLabOptions,
    url: String,
    port: u16,
    admin_password: String,
    service_password: String,
    cpi_password: String,
}

impl KeystonePlan {
    /// The URL clients will authenticate at (`…/v3`).
    pub fn auth_url(&self) -> String {
        format!("{}/v3", self.url)
    }

    /// Ironic's `[keystone_authtoken]` for this Keystone, and the CPI's `ironic.auth`.
    pub fn authtoken(&self, cpi_auth: Value) -> KeystoneAuthtoken {
        KeystoneAuthtoken {
            auth_url: self.auth_url(),
            username: SERVICE_USER.into(),
            password: self.service_password.clone(),
            project_name: SERVICE_PROJECT.into(),
            cpi_auth,
        }
    }

    /// `ironic.auth` for the CPI user's password at this Keystone, in [`REGION`].
    pub fn password_auth(&self) -> Value {
        json!({"type": "keystone_password", "auth_url": self.auth_url(), "username": CPI_USER,
               "password": self.cpi_password, "user_domain_name": "Default",
               "project_name": CPI_PROJECT, "project_domain_name": "Default",
               "region_name": REGION})
    }

    pub fn start(self) -> Result<KeystoneLab, String> {
        let KeystonePlan {
            opts,
            url,
            port,
            admin_password,
            service_password,
            cpi_password,
        } = self;
        let started = Instant::now();
        let venv = ensure_venv(opts.venv.clone())?;
        let dir = tempfile::Builder::new()
            .prefix("keystone-lab-")
            .tempdir()
            .map_err(|e| format!("cannot create a lab directory: {e}"))?
            .keep();
        let conf = dir.join("keystone.conf");
        std::fs::write(
            &conf,
            keystone_conf(&dir, "keystone.log", opts.token_expiration),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;

        // The setup runs before the server starts: a server whose imports finish before
        // fernet_setup has made the key repository exits at once ("fernet-keys does not exist",
        // seen on a clean CI machine), so the two must not overlap.
        let (uid, gid) = (current_uid(), current_gid());
        let identity_url = format!("{url}/v3");
        let mut setup = Command::new(venv.join("bin/python"));
        setup
            .arg(launcher())
            .arg("setup")
            .arg(&conf)
            .arg("db_sync")
            .arg(format!(
                "fernet_setup --keystone-user {uid} --keystone-group {gid}"
            ))
            .arg(format!(
                "credential_setup --keystone-user {uid} --keystone-group {gid}"
            ))
            // keystonemiddleware finds Keystone through the internal identity endpoint.
            .arg(format!(
                "bootstrap --bootstrap-region-id {REGION} --bootstrap-public-url {identity_url} \
                 --bootstrap-internal-url {identity_url}"
            ))
            .env("OS_BOOTSTRAP_PASSWORD", &admin_password);
        process::run_logged("keystone-manage setup", setup, &dir.join("setup.log"))?;
        let manage_done = started.elapsed();
        let serve_started = Instant::now();
        let mut process = spawn_server(&venv, &dir, &conf, port, "keystone")?;
        process::wait_for_http(&identity_url, opts.start_timeout, Some(&mut process)).map_err(
            |e| {
                format!(
                    "{e}\nkeystone.log:\n{}",
                    process::log_tail(&dir.join("keystone.log"), 30)
                )
            },
        )?;
        let serve = serve_started.elapsed();
        let server = KeystoneServer {
            url,
            started_in: serve,
            process,
        };
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let populate_started = Instant::now();
        let mut lab = KeystoneLab {
            server,
            dir,
            timings: KeystoneTimings {
                manage: manage_done,
                serve,
                populate: Duration::ZERO,
                total: Duration::ZERO,
            },
            cpi_user: LabUser::empty(),
            app_credential: LabAppCredential {
                id: String::new(),
                secret: String::new(),
            },
            service_user: LabUser::empty(),
            admin_password,
            member_role_id: String::new(),
            venv,
            http,
        };
        lab.populate(service_password, cpi_password)?;
        lab.timings.populate = populate_started.elapsed();
        lab.timings.total = started.elapsed();
        eprintln!(
            "keystone started in {:.2} s at {} (keystone-manage {:.2} s, serve {:.2} s, populate \
             {:.2} s; dir {})",
            lab.timings.total.as_secs_f64(),
            lab.server.url,
            lab.timings.manage.as_secs_f64(),
            lab.timings.serve.as_secs_f64(),
            lab.timings.populate.as_secs_f64(),
            lab.dir.display()
        );
        Ok(lab)
    }
}

impl KeystoneLab {
    /// Choose the port and the passwords; [`KeystonePlan::start`] starts it.
    pub fn plan(opts: KeystoneLabOptions) -> Result<KeystonePlan, String> {
        let port = process::free_port()?;
        Ok(KeystonePlan {
            opts,
            url: format!("http://127.0.0.1:{port}"),
            port,
            admin_password: secret("admin"),
            service_password: secret(SERVICE_USER),
            cpi_password: secret(CPI_USER),
        })
    }

    pub fn start(opts: KeystoneLabOptions) -> Result<KeystoneLab, String> {
        Self::plan(opts)?.start()
    }

    /// `http://127.0.0.1:PORT`, without `/v3`.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The URL clients authenticate at (`…/v3`).
    pub fn auth_url(&self) -> String {
        self.server.auth_url()
    }

    /// Ironic's `[keystone_authtoken]` for this Keystone, and the CPI's `ironic.auth`.
    pub fn authtoken(&self, cpi_auth: Value) -> KeystoneAuthtoken {
        KeystoneAuthtoken {
            auth_url: self.auth_url(),
            username: self.service_user.name.clone(),
            password: self.service_user.password.clone(),
            project_name: self.service_user.project_name.clone(),
            cpi_auth,
        }
    }

    /// `ironic.auth` for the CPI user's password, at `auth_url` (this lab's, or a sibling
    /// server's), in [`REGION`].
    pub fn password_auth(&self, auth_url: &str) -> Value {
        Self::password_auth_of(&self.cpi_user, auth_url)
    }

    /// `ironic.auth` for the CPI user's application credential, at `auth_url`, in [`REGION`].
    pub fn application_credential_auth(&self, auth_url: &str) -> Value {
        json!({"type": "keystone_application_credential", "auth_url": auth_url,
               "application_credential_id": self.app_credential.id,
               "application_credential_secret": self.app_credential.secret,
               "region_name": REGION})
    }

    /// A system-scoped admin token (Ironic's system admin: enrolls nodes for any project).
    pub fn system_admin_token(&self) -> Result<String, String> {
        self.token(json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": self.admin_password}}},
            "scope": {"system": {"all": true}},
        }}))
    }

    /// Register the `baremetal` service: a public endpoint at `ironic_url` in [`REGION`], and
    /// endpoints a client must not pick (internal in [`REGION`], public in [`OTHER_REGION`]),
    /// both at `unreachable_url`.
    pub fn register_baremetal(
        &self,
        ironic_url: &str,
        unreachable_url: &str,
    ) -> Result<(), String> {
        let admin = self.system_admin_token()?;
        self.api(
            Method::POST,
            "/v3/regions",
            Some(&admin),
            json!({"region": {"id": OTHER_REGION}}),
        )?;
        let service = self.api(
            Method::POST,
            "/v3/services",
            Some(&admin),
            json!({"service": {"type": "baremetal", "name": "ironic"}}),
        )?;
        let service_id = id_of(&service, "/service/id")?;
        for (interface, region, url) in [
            ("public", REGION, ironic_url),
            ("internal", REGION, unreachable_url),
            ("public", OTHER_REGION, unreachable_url),
        ] {
            self.api(
                Method::POST,
                "/v3/endpoints",
                Some(&admin),
                json!({"endpoint": {"service_id": service_id, "interface": interface,
                                    "region_id": region, "url": url}}),
            )?;
        }
        Ok(())
    }

    /// Revoke every token of `user_id` the way an operator can: disable the user (Keystone
    /// records a revocation event) and enable it again. Tokens issued in the same second as the
    /// event count as revoked too (fernet timestamps have whole seconds), so this waits until
    /// the next second before returning.
    pub fn revoke_tokens_of(&self, user_id: &str) -> Result<(), String> {
        let admin = self.system_admin_token()?;
        for enabled in [false, true] {
            self.api(
                Method::PATCH,
                &format!("/v3/users/{user_id}"),
                Some(&admin),
                json!({"user": {"enabled": enabled}}),
            )?;
        }
        std::thread::sleep(Duration::from_millis(1100));
        Ok(())
    }

    /// Another Keystone server on this lab's database and keys whose tokens live
    /// `token_expiration` seconds: tokens it issues are valid everywhere else too, until they
    /// expire (a way to make a token expire on demand).
    pub fn start_sibling(&self, token_expiration: u32) -> Result<KeystoneServer, String> {
        let name = format!("keystone-{token_expiration}s");
        let conf = self.dir.join(format!("{name}.conf"));
        let log = format!("{name}.log");
        std::fs::write(&conf, keystone_conf(&self.dir, &log, token_expiration))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let port = process::free_port()?;
        let started = Instant::now();
        let mut process = spawn_server(&self.venv, &self.dir, &conf, port, &name)?;
        let url = format!("http://127.0.0.1:{port}");
        process::wait_for_http(
            &format!("{url}/v3"),
            Duration::from_secs(120),
            Some(&mut process),
        )?;
        Ok(KeystoneServer {
            url,
            started_in: started.elapsed(),
            process,
        })
    }

    /// Keystone's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.dir.join("keystone.log"), lines)
    }

    fn populate(&mut self, service_password: String, cpi_password: String) -> Result<(), String> {
        let admin = self.system_admin_token()?;
        let role = |name: &str| -> Result<String, String> {
            let found = self.api(
                Method::GET,
                &format!("/v3/roles?name={name}"),
                Some(&admin),
                Value::Null,
            )?;
            id_of(&found, "/roles/0/id")
        };
        let (member, service) = (role("member")?, role("service")?);
        self.member_role_id = member;
        let service_project = self.create_project(&admin, SERVICE_PROJECT)?;
        let service_user = LabUser {
            id: String::new(),
            name: SERVICE_USER.into(),
            password: service_password,
            project_id: service_project,
            project_name: SERVICE_PROJECT.into(),
        };
        self.service_user = self.create_user(&admin, service_user, &service)?;
        let cpi_user = LabUser {
            id: String::new(),
            name: CPI_USER.into(),
            password: cpi_password,
            project_id: self.create_project(&admin, CPI_PROJECT)?,
            project_name: CPI_PROJECT.into(),
        };
        self.cpi_user = self.create_user(&admin, cpi_user, &self.member_role_id)?;
        // An application credential is made by its user, with a token scoped to the project it
        // will act in; it carries that user's roles there.
        let u = &self.cpi_user;
        let token = self.token(json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "id": u.id, "password": u.password}}},
            "scope": {"project": {"id": u.project_id}},
        }}))?;
        let created = self.api(
            Method::POST,
            &format!("/v3/users/{}/application_credentials", u.id),
            Some(&token),
            json!({"application_credential": {"name": "bosh-cpi-lab",
                   "description": "the BOSH CPI's credential in the Keystone lab"}}),
        )?;
        self.app_credential = LabAppCredential {
            id: id_of(&created, "/application_credential/id")?,
            secret: id_of(&created, "/application_credential/secret")?,
        };
        Ok(())
    }

    /// Another user with the `member` role in the CPI's project: one whose tokens a test may
    /// revoke without disturbing the tests that share [`KeystoneLab::cpi_user`].
    pub fn add_cpi_user(&self, name: &str) -> Result<LabUser, String> {
        let admin = self.system_admin_token()?;
        let user = LabUser {
            id: String::new(),
            name: name.into(),
            password: secret(name),
            project_id: self.cpi_user.project_id.clone(),
            project_name: self.cpi_user.project_name.clone(),
        };
        self.create_user(&admin, user, &self.member_role_id)
    }

    /// `ironic.auth` for `user`'s password at `auth_url`, in [`REGION`].
    pub fn password_auth_of(user: &LabUser, auth_url: &str) -> Value {
        json!({"type": "keystone_password", "auth_url": auth_url, "username": user.name,
               "password": user.password, "user_domain_name": "Default",
               "project_name": user.project_name, "project_domain_name": "Default",
               "region_name": REGION})
    }

    fn create_project(&self, admin: &str, name: &str) -> Result<String, String> {
        let p = self.api(
            Method::POST,
            "/v3/projects",
            Some(admin),
            json!({"project": {"name": name, "domain_id": "default"}}),
        )?;
        id_of(&p, "/project/id")
    }

    /// `user` (its id left empty) created with its password, and `role_id` for it in its
    /// project; with its id filled in.
    fn create_user(
        &self,
        admin: &str,
        mut user: LabUser,
        role_id: &str,
    ) -> Result<LabUser, String> {
        let created = self.api(
            Method::POST,
            "/v3/users",
            Some(admin),
            json!({"user": {"name": user.name, "domain_id": "default", "password": user.password,
                            "default_project_id": user.project_id}}),
        )?;
        user.id = id_of(&created, "/user/id")?;
        self.api(
            Method::PUT,
            &format!(
                "/v3/projects/{}/users/{}/roles/{role_id}",
                user.project_id, user.id
            ),
            Some(admin),
            Value::Null,
        )?;
        Ok(user)
    }

    fn token(&self, body: Value) -> Result<String, String> {
        let resp = self
            .http
            .post(format!("{}/auth/tokens", self.auth_url()))
            .json(&body)
            .send()
            .map_err(|e| format!("POST /v3/auth/tokens: {}", e.without_url()))?;
        let status = resp.status();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match token {
            Some(t) if status.is_success() => Ok(t),
            _ => Err(format!(
                "POST /v3/auth/tokens answered {status}: {}",
                resp.text().unwrap_or_default()
            )),
        }
    }

    /// One admin API call; `Value::Null` as body sends none. The answer's JSON (or `Null`).
    fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.server.url));
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .map_err(|e| format!("{method} {path}: {}", e.without_url()))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{method} {path} answered {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl LabUser {
    fn empty() -> LabUser {
        LabUser {
            id: String::new(),
            name: String::new(),
            password: String::new(),
            project_id: String::new(),
            project_name: String::new(),
        }
    }
}

fn id_of(doc: &Value, pointer: &str) -> Result<String, String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("no {pointer} in Keystone's answer {doc}"))
}

/// A password unique to this lab, recognisable in a leak.
fn secret(who: &str) -> String {
    format!("lab-{who}-{}", uuid::Uuid::new_v4().simple())
}

fn current_uid() -> u32 {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

fn current_gid() -> u32 {
    // SAFETY: getgid(2) cannot fail and touches no memory.
    unsafe { libc::getgid() }
}

/// `scripts/lab/keystone-lab.py`: keystone-manage commands in one process, and the server.
fn launcher() -> PathBuf {
    process::repo_root().join("scripts/lab/keystone-lab.py")
}

fn spawn_server(
    venv: &Path,
    dir: &Path,
    conf: &Path,
    port: u16,
    name: &str,
) -> Result<ChildProcess, String> {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(launcher())
        .arg("serve")
        .arg(conf)
        .arg("127.0.0.1")
        .arg(port.to_string());
    ChildProcess::spawn(
        name,
        cmd,
        &dir.join(format!("{name}.stdout.log")),
        SpawnOptions {
            grace: Duration::from_secs(5),
            // The main server owns the directory; a sibling leaves it alone.
            remove_dir: (name == "keystone").then(|| dir.to_path_buf()),
        },
    )
}

/// The venv to use: installed by `scripts/lab/install-keystone` when it is the repository's own
/// (cheap when up to date). An explicitly named venv is only checked, never modified.
fn ensure_venv(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    let named =
        explicit.or_else(|| std::env::var_os("IRONIC_CPI_KEYSTONE_VENV").map(PathBuf::from));
    if let Some(v) = named {
        if v.join("bin/keystone-manage").is_file() {
            return Ok(v);
        }
        return Err(format!(
            "{} has no bin/keystone-manage; run scripts/lab/install-keystone with \
             IRONIC_CPI_KEYSTONE_VENV={}",
            v.display(),
            v.display()
        ));
    }
    let root = process::repo_root();
    let venv = root.join(".cache/keystone-venv");
    let script = root.join("scripts/lab/install-keystone");
    std::fs::create_dir_all(root.join(".cache"))
        .map_err(|e| format!("cannot create {}/.cache: {e}", root.display()))?;
    // Two test binaries may start at once: one installs, the other waits on the lock.
    let mut cmd = Command::new("flock");
    cmd.arg(root.join(".cache/install-keystone.lock"))
        .arg(&script)
        .env_remove("IRONIC_CPI_KEYSTONE_VENV");
    process::run_logged(
        "scripts/lab/install-keystone",
        cmd,
        &root.join(".cache/install-keystone.log"),
    )?;
    if venv.join("bin/keystone-manage").is_file() {
        Ok(venv)
    } else {
        Err(format!(
            "{} has no bin/keystone-manage after install",
            venv.display()
        ))
    }
}

/// SQLite, fernet tokens, an in-process cache, and cheap password hashes (bcrypt's default cost
/// makes every password check take a quarter second).
///
/// Without a cache one token validation opens some 150 SQLite sessions: 3-6 s on a loaded
/// 2-core machine, against 0.03-0.06 s with it (measured with cProfile on this lab). Keystone
/// drops cached tokens itself when it records a revocation, as it does with memcached.
fn keystone_conf(dir: &Path, log_file: &str, token_expiration: u32) -> String {
    let d = dir.display();
    format!(
        "[DEFAULT]
log_dir = {d}
log_file = {log_file}
use_stderr = false
[cache]
enabled = true
backend = dogpile.cache.memory
[credential]
key_repository = {d}/credential-keys
[database]
connection = sqlite:///{d}/keystone.sqlite
[fernet_tokens]
key_repository = {d}/fernet-keys
[identity]
password_hash_rounds = 4
[token]
provider = fernet
expiration = {token_expiration}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_names_the_lab_files_and_the_expiration() {
        let c = keystone_conf(Path::new("/tmp/k"), "k.log", 7);
        for want in [
            "connection = sqlite:////tmp/k/keystone.sqlite",
            "key_repository = /tmp/k/fernet-keys",
            "key_repository = /tmp/k/credential-keys",
            "expiration = 7",
            "log_file = k.log",
            "backend = dogpile.cache.memory",
        ] {
            assert!(c.contains(want), "missing {want}");
        }
    }
}
