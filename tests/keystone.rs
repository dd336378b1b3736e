//! Keystone and TLS against the real services: Keystone 30.0.0 (SQLite, fernet tokens, served by
//! cheroot) and Ironic 39.0.0 with `auth_strategy = keystone` (keystonemiddleware validating every
//! token with that Keystone) behind its own TLS, with a certificate from a CA made for this run;
//! the companion server; and the real `ironic_cpi` binary, one process per call.
//!
//! The nodes belong to the CPI's project (`owner`), enrolled by the system admin: Ironic's RBAC
//! lets the project's `member` see and deploy exactly those. Each test uses its own
//! resource_class and MAC byte.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};

use ironic_cpi::config::{IronicAuth, Secret};
use ironic_cpi::ironic::{IronicClient, IronicError};
use ironic_cpi_testkit::cpi::{create_vm_args, node_of, CallOutcome, CpiLab};
use ironic_cpi_testkit::ironic::{enroll_pool_with, pool_state, IronicLabOptions, LabAuth, LabTls};
use ironic_cpi_testkit::keystone::{KeystoneLab, KeystoneLabOptions, OTHER_REGION};
use ironic_cpi_testkit::tls::TestCa;

/// The name Ironic's certificate is for (and the only one).
const IRONIC_HOST: &str = "localhost";

struct Shared {
    keystone: KeystoneLab,
    lab: CpiLab,
    ca: TestCa,
    stemcell: String,
    /// Ironic's system admin (a system-scoped token): enrolls nodes, reads the pool.
    admin: IronicClient,
    dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static LAB: OnceLock<Shared> = OnceLock::new();
    LAB.get_or_init(|| {
        // Every CPI call logs each HTTP request: a secret in a log line would show.
        std::env::set_var("RUST_LOG", "debug");
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::create(dir.path(), &[IRONIC_HOST]).unwrap();
        let plan = KeystoneLab::plan(KeystoneLabOptions::default()).unwrap();
        let ironic = IronicLabOptions {
            auth: LabAuth::Keystone(plan.authtoken(plan.password_auth())),
            tls: Some(LabTls {
                cert_file: ca.server_cert.clone(),
                key_file: ca.server_key.clone(),
                ca_file: ca.ca_cert.clone(),
                host: IRONIC_HOST.into(),
            }),
            ..Default::default()
        };
        // Ironic asks Keystone nothing until the first request: both start at once.
        let (keystone, lab) = std::thread::scope(|scope| {
            let keystone = scope.spawn(move || plan.start());
            let lab = common::start_lab(ironic, false, false);
            let keystone = keystone.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
            (keystone, lab)
        });
        eprintln!(
            "keystone lab: keystone {:.2} s, ironic {:.2} s",
            keystone.timings.total.as_secs_f64(),
            lab.ironic.started_in.as_secs_f64()
        );
        // A port nothing listens on: an endpoint a client must not pick.
        let nowhere = format!(
            "https://{IRONIC_HOST}:{}",
            ironic_cpi_testkit::process::free_port().unwrap()
        );
        keystone
            .register_baremetal(&lab.ironic.url, &nowhere)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut admin_cfg = lab.config.ironic.clone();
        admin_cfg.auth = IronicAuth::Token {
            token: Secret::new(keystone.system_admin_token().unwrap()),
        };
        let admin = IronicClient::new(&admin_cfg).unwrap();
        let stemcell = lab.upload_stemcell(None, 1024 * 1024 + 3);
        Shared {
            keystone,
            lab,
            ca,
            stemcell,
            admin,
            dir,
        }
    })
}

/// The lab's CPI config with `edit` applied, as a file named `name`.
fn config(name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let s = shared();
    s.lab.config_variant(s.dir.path(), name, edit)
}

fn call(config: &Path, method: &str, args: Value) -> CallOutcome {
    let out = shared()
        .lab
        .call_with_config(config, method, args, 2, Some(3));
    eprintln!(
        "{method} with {}: {:.2} s",
        config.file_name().unwrap_or_default().to_string_lossy(),
        out.elapsed.as_secs_f64()
    );
    out
}

/// `count` available nodes of resource class `rc`, owned by the CPI's project.
fn enroll(rc: &str, byte: u8, count: u16) -> Vec<String> {
    let s = shared();
    enroll_pool_with(&s.admin, rc, byte, count, |spec| {
        spec.owner = Some(s.keystone.cpi_user.project_id.clone());
    })
}

fn create_vm(config: &Path, rc: &str) -> CallOutcome {
    let mut args = create_vm_args(&shared().stemcell, rc);
    args[5] = json!({"bosh": {"group": "keystone-lab"}});
    call(config, "create_vm", args)
}

/// A whole create_vm / delete_vm through the binary with `config` (and the calls between that
/// change the node): the node is deployed, then the pool is exactly as it was.
fn deploy_and_delete(config: &Path, rc: &str, byte: u8) {
    let s = shared();
    let nodes = enroll(rc, byte, 2);
    let before = pool_state(&s.admin, rc);
    let out = create_vm(config, rc);
    let cid = out.vm_cid();
    let node_id = node_of(&cid).to_string();
    assert!(nodes.contains(&node_id), "{cid} is not on one of {nodes:?}");
    let node = s.admin.get_node(&node_id).unwrap();
    assert_eq!(node.provision_state.as_deref(), Some("active"));
    assert_eq!(call(config, "has_vm", json!([cid])).ok(), &json!(true));
    let metadata = json!({"director": "lab", "deployment": "ks", "instance_group": rc,
                          "index": "0", "id": "1d2c", "name": format!("{rc}/1d2c")});
    call(config, "set_vm_metadata", json!([cid, metadata])).ok();
    let node = s.admin.get_node(&node_id).unwrap();
    assert_eq!(node.extra["bosh_metadata"]["deployment"], json!("ks"));
    call(config, "reboot_vm", json!([cid])).ok();
    call(config, "delete_vm", json!([cid])).ok();
    assert_eq!(call(config, "has_vm", json!([cid])).ok(), &json!(false));
    assert_eq!(pool_state(&s.admin, rc), before);
    let secrets = [
        s.keystone.cpi_user.password.as_str(),
        s.keystone.app_credential.secret.as_str(),
    ];
    for shown in [&out.stdout, &out.stderr] {
        for secret in secrets {
            assert!(!shown.contains(secret), "a secret shows in {shown}");
        }
        // Keystone's fernet tokens all start so.
        assert!(!shown.contains("gAAAAA"), "a token shows in {shown}");
    }
}

/// The JSON block after `<!-- keystone-example: NAME -->` in docs/configuration.md.
fn doc_example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- keystone-example: {name} -->");
    let (_, after) = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("{} has no {marker}", path.display()));
    let block = after
        .split_once("```json")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("no JSON block after {marker}"));
    serde_json::from_str(block).unwrap_or_else(|e| panic!("{marker}: {e}"))
}

/// The lab's CPI config with `ironic` as its whole `ironic` section, in a directory of its own
/// that holds the CA as `cacert.pem` (the documented, relative `ca_cert_file`).
fn documented_config(name: &str, ironic: Value) -> PathBuf {
    let s = shared();
    let dir = s.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&s.ca.ca_cert, dir.join("cacert.pem")).unwrap();
    s.lab
        .config_variant(&dir, "cpi.json", |c| c["ironic"] = ironic)
}

#[test]
fn documented_keystone_password_example_deploys_and_deletes() {
    let s = shared();
    let mut ironic = doc_example("ironic");
    // The documented names are the lab's; only where Keystone is and the password are its own.
    ironic["auth"]["auth_url"] = json!(s.keystone.auth_url());
    ironic["auth"]["password"] = json!(s.keystone.cpi_user.password);
    // No ironic.url: the token's catalog names Ironic (public, RegionOne, https://localhost).
    assert_eq!(ironic["url"], json!(""));
    let cfg = documented_config("doc-password", ironic);
    deploy_and_delete(&cfg, "ks-password", 0x21);
}

#[test]
fn documented_application_credential_example_deploys_and_deletes() {
    let s = shared();
    let mut ironic = doc_example("ironic");
    let mut auth = doc_example("application-credential");
    auth["auth_url"] = json!(s.keystone.auth_url());
    auth["application_credential_id"] = json!(s.keystone.app_credential.id);
    auth["application_credential_secret"] = json!(s.keystone.app_credential.secret);
    ironic["auth"] = auth;
    let cfg = documented_config("doc-appcred", ironic);
    deploy_and_delete(&cfg, "ks-appcred", 0x22);
}

/// A library client with the lab's config (the CPI user's password, the catalog URL) and `edit`.
fn client(edit: impl FnOnce(&mut ironic_cpi::config::IronicConfig)) -> IronicClient {
    let mut cfg = shared().lab.config.ironic.clone();
    cfg.url = String::new();
    edit(&mut cfg);
    IronicClient::new(&cfg).unwrap()
}

#[test]
fn a_revoked_token_is_renewed_once() {
    let s = shared();
    let node = enroll("ks-revoke", 0x23, 1).remove(0);
    // A user of its own: revoking the shared user's tokens would disturb the other tests.
    let user = s.keystone.add_cpi_user("bosh-cpi-revoked").unwrap();
    let auth = KeystoneLab::password_auth_of(&user, &s.keystone.auth_url());
    let c = client(|cfg| cfg.auth = serde_json::from_value(auth).unwrap());
    assert_eq!(c.get_node(&node).unwrap().uuid, node);
    assert_eq!(
        c.request_count(),
        2,
        "token, GET node (no GET /v1: Ironic takes the configured microversion)"
    );
    s.keystone.revoke_tokens_of(&user.id).unwrap();
    assert_eq!(c.get_node(&node).unwrap().uuid, node);
    assert_eq!(
        c.request_count(),
        5,
        "the GET refused with the revoked token, one new token, the GET again"
    );
}

/// Seconds a token of the short-lived Keystone server lives.
const SHORT_TOKEN_SECONDS: u32 = 15;

#[test]
fn an_expired_token_is_renewed_once() {
    let s = shared();
    let node = enroll("ks-expire", 0x24, 1).remove(0);
    // Tokens from this server expire; Ironic's Keystone judges them (same database and keys).
    let short = s.keystone.start_sibling(SHORT_TOKEN_SECONDS).unwrap();
    eprintln!(
        "short-token keystone started in {:.2} s",
        short.started_in.as_secs_f64()
    );
    let auth = s.keystone.password_auth(&short.auth_url());
    let c = client(|cfg| cfg.auth = serde_json::from_value(auth).unwrap());
    assert_eq!(c.get_node(&node).unwrap().uuid, node);
    assert_eq!(
        c.request_count(),
        2,
        "token, GET node (no GET /v1: Ironic takes the configured microversion)"
    );
    std::thread::sleep(std::time::Duration::from_secs(
        u64::from(SHORT_TOKEN_SECONDS) + 1,
    ));
    assert_eq!(c.get_node(&node).unwrap().uuid, node);
    assert_eq!(
        c.request_count(),
        5,
        "the GET refused with the expired token, one new token, the GET again"
    );
}

#[test]
fn region_name_picks_the_endpoint_of_its_region() {
    let s = shared();
    let region = |name: Option<&str>| {
        client(|cfg| {
            cfg.retry.max_attempts = 1;
            let mut auth = s.keystone.password_auth(&s.keystone.auth_url());
            auth["region_name"] = json!(name);
            cfg.auth = serde_json::from_value(auth).unwrap();
        })
    };
    assert_eq!(region(Some("RegionOne")).microversion().unwrap(), (1, 115));
    // RegionTwo's public endpoint is a port nothing listens on.
    let e = region(Some(OTHER_REGION)).microversion().unwrap_err();
    assert!(matches!(e, IronicError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot reach Ironic"), "{e}");
    let e = region(Some("RegionNine")).microversion().unwrap_err();
    assert!(matches!(e, IronicError::Auth { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("no public baremetal endpoint in region RegionNine"),
        "{e}"
    );
}

#[test]
fn wrong_credentials_fail_at_once_naming_what_failed_without_the_secret() {
    let s = shared();
    let k = &s.keystone;
    let wrong = "S3cret-wrong-keystone-secret-4d1e";
    let password = |edit: &dyn Fn(&mut Value)| {
        let mut a = k.password_auth(&k.auth_url());
        edit(&mut a);
        a
    };
    let mut appcred = k.application_credential_auth(&k.auth_url());
    appcred["application_credential_secret"] = json!(wrong);
    let cases = [
        (
            "wrong-password.json",
            password(&|a| a["password"] = json!(wrong)),
            vec![
                k.auth_url(),
                format!("user '{}' (domain 'Default')", k.cpi_user.name),
                format!("project '{}'", k.cpi_user.project_name),
                "HTTP 401".into(),
            ],
        ),
        (
            "wrong-project.json",
            password(&|a| a["project_name"] = json!("no-such-project")),
            vec!["project 'no-such-project'".into(), "HTTP 401".into()],
        ),
        (
            "wrong-appcred-secret.json",
            appcred,
            vec![
                format!("application credential '{}'", k.app_credential.id),
                "HTTP 401".into(),
            ],
        ),
    ];
    let secrets = [
        wrong,
        k.cpi_user.password.as_str(),
        k.app_credential.secret.as_str(),
    ];
    for (name, auth, expect) in cases {
        let cfg = config(name, |c| c["ironic"]["auth"] = auth);
        let created = create_vm(&cfg, "ks-wrong");
        let has = call(
            &cfg,
            "has_vm",
            json!(["6f1c2f0e-0000-4000-8000-00000000bbbb:01a22b17-0000-7000-8000-00000000bbbb"]),
        );
        for (out, kind) in [
            (&created, "Bosh::Clouds::VMCreationFailed"),
            (&has, "Bosh::Clouds::CloudError"),
        ] {
            assert_eq!(out.error_type(), Some(kind), "{name}: {}", out.stdout);
            assert_eq!(out.response["error"]["ok_to_retry"], json!(false), "{name}");
            let message = out.response["error"]["message"].as_str().unwrap();
            eprintln!("{name}: {message}");
            assert!(message.contains("Keystone"), "{name}: {message}");
            for want in &expect {
                assert!(
                    message.contains(want.as_str()),
                    "{name}: '{message}' lacks '{want}'"
                );
            }
            assert!(
                !out.stderr.contains("retrying in"),
                "{name}: {}",
                out.stderr
            );
            for shown in [&out.stdout, &out.stderr] {
                for secret in secrets {
                    assert!(!shown.contains(secret), "{name} shows a secret: {shown}");
                }
            }
        }
    }
}

/// A `has_vm` that must fail on the TLS handshake with Ironic: a CloudError naming the
/// certificate problem, given up at once (no retry can fix a certificate).
fn assert_tls_refused(config: &Path, expect: &[&str]) {
    let out = call(
        config,
        "has_vm",
        json!(["6f1c2f0e-0000-4000-8000-00000000aaaa:01a22b17-0000-7000-8000-00000000aaaa"]),
    );
    out.assert_error("Bosh::Clouds::CloudError");
    assert_eq!(
        out.response["error"]["ok_to_retry"],
        json!(false),
        "{}",
        out.stdout
    );
    let message = out.response["error"]["message"].as_str().unwrap();
    eprintln!("refused: {message}");
    for want in expect {
        assert!(message.contains(want), "'{message}' lacks '{want}'");
    }
    assert!(
        !out.stderr.contains("retrying in"),
        "a certificate error was retried:\n{}",
        out.stderr
    );
}

#[test]
fn tls_needs_the_ca_file_and_the_right_host_name() {
    let s = shared();
    // The CA makes the catalog's https://localhost endpoint trusted ...
    let trusted = config("tls-trusted.json", |c| c["ironic"]["url"] = json!(""));
    assert_eq!(
        call(
            &trusted,
            "has_vm",
            json!(["6f1c2f0e-0000-4000-8000-00000000aaaa:01a22b17-0000-7000-8000-00000000aaaa"])
        )
        .ok(),
        &json!(false)
    );
    // ... without it the certificate has no trusted issuer ...
    let no_ca = config("tls-no-ca.json", |c| {
        c["ironic"]["url"] = json!("");
        c["ironic"].as_object_mut().unwrap().remove("ca_cert_file");
    });
    assert_tls_refused(&no_ca, &["certificate", "ca_cert_file", IRONIC_HOST]);
    // ... and with it, a name the certificate does not carry is refused.
    let port = url::Url::parse(&s.lab.ironic.url).unwrap().port().unwrap();
    let wrong_name = config("tls-wrong-name.json", |c| {
        c["ironic"]["url"] = json!(format!("https://127.0.0.1:{port}"));
    });
    assert_tls_refused(&wrong_name, &["certificate", "127.0.0.1"]);
    assert!(s.ca.ca_cert.is_file());
}
