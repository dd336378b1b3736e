//! Secrets never leak: every CPI method runs through the real binary (debug logging on) with
//! unique secret values in the config (Ironic http_basic password, registry password, WebDAV
//! password, mbus URL password) and in the arguments (env.bosh.password, the mbus certificate's
//! private key, blobstore secrets). None of them may appear in any response, any stderr, the
//! companion server's or Ironic's logs, or error messages of failure paths (wrong Ironic
//! password, unreachable registry, credentials in an Ironic URL, wrong WebDAV password).
//!
//! The published config drives may carry what the agent needs, and only in its settings
//! (`user-data`): env and mbus. The registry password appears in no drive (no
//! `embed_credentials_for_agent`), and nothing of the CPI's own credentials ever does.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use ironic_cpi::lab::cpi::{make_stemcell_image, CallOutcome, CpiLab};
use ironic_cpi::lab::ironic::{enroll_node, lab_mac, IronicLabOptions, LabAuth, NodeSpec};
use ironic_cpi::lab::server::{ServerLab, ServerOpts};
use ironic_cpi::rpc::dispatch::METHODS;

/// Config secrets: the CPI uses them, and nothing it writes may show them.
const IRONIC_PW: &str = "S3cret-Ironic-pw-7f1c";
const WEBDAV_PW: &str = "S3cret-Webdav-pw-2b9e";
const REGISTRY_PW: &str = "S3cret-Registry-pw-c4d0";
const MBUS_PW: &str = "S3cret-Mbus-pw-91aa";
/// Argument secrets: only the agent settings in the config drive may carry them.
const ENV_PW: &str = "S3cret-Env-password-5e3f";
const MBUS_KEY: &str = "S3cret-Mbus-private-key-b71d";
const BLOBSTORE_PW: &str = "S3cret-Blobstore-pw-0c62";
/// Failure paths.
const WRONG_IRONIC_PW: &str = "S3cret-Wrong-ironic-pw-33ab";
const URL_USERINFO_PW: &str = "S3cret-Url-userinfo-pw-e810";
const UNREACHABLE_REGISTRY_PW: &str = "S3cret-Unreachable-registry-pw-71f2";
const WRONG_WEBDAV_PW: &str = "S3cret-Wrong-webdav-pw-a5c7";

const ARGUMENT_SECRETS: [&str; 3] = [ENV_PW, MBUS_KEY, BLOBSTORE_PW];

fn all_secrets() -> Vec<&'static str> {
    vec![
        IRONIC_PW,
        WEBDAV_PW,
        REGISTRY_PW,
        MBUS_PW,
        ENV_PW,
        MBUS_KEY,
        BLOBSTORE_PW,
        WRONG_IRONIC_PW,
        URL_USERINFO_PW,
        UNREACHABLE_REGISTRY_PW,
        WRONG_WEBDAV_PW,
    ]
}

fn assert_clean(what: &str, text: &str) {
    for s in all_secrets() {
        assert!(!text.contains(s), "{what} shows secret {s}:\n{text}");
    }
}

fn env() -> Value {
    json!({"bosh": {
        "password": ENV_PW,
        "mbus": {"cert": {"ca": "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n",
                          "certificate": "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n",
                          "private_key": format!("-----BEGIN RSA PRIVATE KEY-----\n{MBUS_KEY}\n-----END RSA PRIVATE KEY-----\n")}},
        "blobstores": [{"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250",
                        "user": "agent", "password": BLOBSTORE_PW}}],
        "group": "d-dep-web"}})
}

struct Lab {
    lab: CpiLab,
    /// The companion server holding the unique WebDAV and registry passwords.
    server: ServerLab,
    config: PathBuf,
    dir: tempfile::TempDir,
    /// Every call, for the final check.
    calls: Mutex<Vec<(String, CallOutcome)>>,
}

impl Lab {
    fn start() -> Lab {
        let lab = common::start_lab(
            IronicLabOptions {
                auth: LabAuth::HttpBasic {
                    username: "cpi".into(),
                    password: IRONIC_PW.into(),
                },
                ..Default::default()
            },
            true,
            true,
        );
        let server = ServerLab::start(ServerOpts {
            anonymous_read: true,
            binary: Some(env!("CARGO_BIN_EXE_ironic_cpi_server").into()),
            extra: json!({"users": [
                {"username": "cpi-writer", "password": WEBDAV_PW, "role": "write"},
                {"username": "cpi-registry", "password": REGISTRY_PW, "role": "write"},
            ]}),
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let repo = |path: &str| {
            json!({"url": format!("{}/{path}", server.url), "username": "cpi-writer",
                   "password": WEBDAV_PW, "timeout": 60})
        };
        let config = write_config(&lab.config_path, dir.path(), "cpi.json", |c| {
            c["stemcell_repository"] = repo("images");
            c["metadata_repository"] = repo("metadata");
            c["registry"] = json!({"endpoint": format!("{}/registry", server.url),
                                   "username": "cpi-registry", "password": REGISTRY_PW});
            c["agent"]["mbus"] = json!(format!("nats://nats:{MBUS_PW}@10.0.0.6:4222"));
        });
        Lab {
            lab,
            server,
            config,
            dir,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn call_with(
        &self,
        config: &Path,
        method: &str,
        args: Value,
        stemcell_api: u32,
    ) -> CallOutcome {
        let out = self
            .lab
            .call_with_config(config, method, args, 2, Some(stemcell_api));
        self.calls
            .lock()
            .unwrap()
            .push((method.to_string(), out.clone()));
        out
    }

    fn call(&self, method: &str, args: Value) -> CallOutcome {
        self.call_with(&self.config, method, args, 3)
    }
}

use common::config_variant as write_config;

/// Every file of the config drive published for `node`: path -> bytes.
fn drive_files(server: &ServerLab, node: &str) -> Vec<(String, Vec<u8>)> {
    let (iso, _dir, iso_path) = common::published_drive(&server.url, node);
    let isoinfo = |args: &[&str]| {
        let out = std::process::Command::new("isoinfo")
            .args(["-R", "-i"])
            .arg(&iso_path)
            .args(args)
            .output()
            .expect("isoinfo (Debian genisoimage) is needed: run scripts/setup");
        out.stdout
    };
    let listing = String::from_utf8(isoinfo(&["-f"])).unwrap();
    let mut files = Vec::new();
    for path in listing.lines() {
        let content = isoinfo(&["-x", path]);
        if !content.is_empty() {
            files.push((path.trim_start_matches('/').to_string(), content));
        }
    }
    // The ISO bytes themselves, in case a secret hides outside the files.
    files.push(("<whole image>".to_string(), iso));
    files
}

fn check_drive(server: &ServerLab, node: &str, registry_mode: bool) {
    let files = drive_files(server, node);
    assert!(
        files.iter().any(|(p, _)| p == "ec2/latest/user-data"),
        "{node}: no user-data"
    );
    for (path, content) in &files {
        let text = String::from_utf8_lossy(content);
        let settings_file = path.ends_with("user-data") || path.ends_with("user_data");
        let whole = path == "<whole image>";
        for s in all_secrets() {
            let agent_needs = ARGUMENT_SECRETS.contains(&s) || s == MBUS_PW;
            // Registry mode: the settings live in the registry; the drive only points at it.
            let allowed = agent_needs && !registry_mode && (settings_file || whole);
            if !allowed {
                assert!(
                    !text.contains(s),
                    "config drive of {node}: {path} holds {s}"
                );
            }
        }
        if settings_file && !registry_mode {
            for s in ARGUMENT_SECRETS.iter().chain([&MBUS_PW]) {
                assert!(text.contains(s), "{path} lacks {s}: the agent needs it");
            }
        }
    }
}

fn enroll(lab: &CpiLab, rc: &str, count: u16) {
    let client = lab.client().unwrap();
    for i in 0..count {
        let mut spec = NodeSpec::new(format!("{rc}-{i}"));
        spec.resource_class = Some(rc.into());
        spec.macs = vec![lab_mac(0x61, i, 0)];
        enroll_node(&client, &spec).unwrap();
    }
}

fn vm_cid(out: &CallOutcome) -> String {
    out.ok()[0].as_str().unwrap().to_string()
}

/// The node a VM cid (`<node uuid>:<vm id>`) names.
fn node_of(cid: &str) -> &str {
    cid.split_once(':').map_or(cid, |(node, _)| node)
}

#[test]
fn no_method_and_no_failure_path_leaks_a_secret() {
    // Debug logging in every CPI process: secrets must stay out of every level.
    std::env::set_var("RUST_LOG", "debug");
    let l = Lab::start();
    let rc = "secrets";
    enroll(&l.lab, rc, 2);
    let image_dir = tempfile::tempdir().unwrap();
    let image = make_stemcell_image(image_dir.path(), 256 * 1024, true).unwrap();
    let network = json!({"default": {"type": "manual", "ip": "10.0.20.5",
        "netmask": "255.255.255.0", "gateway": "10.0.20.1", "dns": ["10.0.20.2"],
        "default": ["dns", "gateway"], "prefix": "24", "cloud_properties": {}}});

    l.call("info", json!([])).ok();
    l.call("ping", json!([])).ok();
    let stemcell = l
        .call(
            "create_stemcell",
            json!([image.to_str().unwrap(), {"name": "s", "version": "1", "disk_format": "qcow2"}]),
        )
        .ok()
        .as_str()
        .unwrap()
        .to_string();
    let create = |stemcell_api: u32| {
        let out = l.call_with(
            &l.config,
            "create_vm",
            json!([uuid::Uuid::new_v4().to_string(), stemcell, {"resource_class": rc},
                   network, [], env()]),
            stemcell_api,
        );
        vm_cid(&out)
    };
    // Registry-less (stemcell api 3), and registry mode (stemcell api 1).
    let vm = create(3);
    check_drive(&l.server, node_of(&vm), false);
    let old_vm = create(1);
    check_drive(&l.server, node_of(&old_vm), true);
    let registry_settings = reqwest::blocking::Client::new()
        .get(
            l.server
                .at(&format!("registry/instances/{}/settings", node_of(&old_vm))),
        )
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        registry_settings.contains(ENV_PW),
        "the registry holds the agent settings"
    );

    l.call("has_vm", json!([vm])).ok();
    l.call(
        "set_vm_metadata",
        json!([vm, {"director": "d", "name": "web/0", "deployment": "dep"}]),
    )
    .ok();
    l.call("reboot_vm", json!([vm])).ok();
    l.call(
        "calculate_vm_cloud_properties",
        json!([{"cpu": 2, "ram": 1024, "ephemeral_disk_size": 1024}]),
    )
    .ok();
    let disk = l
        .call("create_disk", json!([1024, {}, vm]))
        .ok()
        .as_str()
        .unwrap()
        .to_string();
    l.call("attach_disk", json!([vm, disk])).ok();
    l.call("get_disks", json!([vm])).ok();
    l.call("has_disk", json!([disk])).ok();
    l.call("set_disk_metadata", json!([disk, {"deployment": "dep"}]))
        .ok();
    // Refused by design (typed errors), but run: their messages are checked too.
    l.call("resize_disk", json!([disk, 2048]));
    l.call("update_disk", json!([disk, 2048, {}]));
    l.call("snapshot_disk", json!([disk, {"deployment": "dep"}]));
    l.call("delete_snapshot", json!(["snap-1"]));
    l.call(
        "create_network",
        json!([{"type": "manual", "cloud_properties": {}}]),
    );
    l.call("delete_network", json!(["net-1"]));
    l.call("configure_networks", json!([vm, network]));
    l.call("current_vm_id", json!([]));
    l.call("detach_disk", json!([vm, disk])).ok();
    l.call("delete_disk", json!([disk])).ok();
    l.call("delete_vm", json!([vm])).ok();
    l.call("delete_vm", json!([old_vm])).ok();

    // Failure paths, each with a secret of its own.
    // Wrong Ironic password; credentials in the Ironic URL (unreachable, so they get reported).
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let ironic_failures: [(&str, Edit); 2] = [
        (
            "wrong-ironic.json",
            Box::new(|c| c["ironic"]["auth"]["password"] = json!(WRONG_IRONIC_PW)),
        ),
        (
            "userinfo.json",
            Box::new(|c| {
                c["ironic"]["url"] = json!(format!("http://cpi:{URL_USERINFO_PW}@127.0.0.1:9"));
                c["ironic"]["connect_timeout"] = json!(1);
                c["ironic"]["retry"] =
                    json!({"max_attempts": 2, "initial_delay": 0.05, "max_delay": 0.1});
            }),
        ),
    ];
    for (name, edit) in ironic_failures {
        let config = write_config(&l.config, l.dir.path(), name, edit);
        let out = l.call_with(&config, "has_vm", json!([vm]), 3);
        assert!(out.error_type().is_some(), "{name}: {}", out.stdout);
    }
    let no_registry = write_config(&l.config, l.dir.path(), "no-registry.json", |c| {
        c["registry"] = json!({"endpoint": "http://127.0.0.1:9/registry",
                               "username": "r", "password": UNREACHABLE_REGISTRY_PW});
    });
    let out = l.call_with(
        &no_registry,
        "create_vm",
        json!([uuid::Uuid::new_v4().to_string(), stemcell, {"resource_class": rc}, network, [], env()]),
        1,
    );
    assert_eq!(
        out.error_type(),
        Some("Bosh::Clouds::VMCreationFailed"),
        "{}",
        out.stdout
    );
    let wrong_dav = write_config(&l.config, l.dir.path(), "wrong-dav.json", |c| {
        c["stemcell_repository"]["password"] = json!(WRONG_WEBDAV_PW);
    });
    let out = l.call_with(
        &wrong_dav,
        "create_stemcell",
        json!([image.to_str().unwrap(), {"name": "s", "version": "2", "disk_format": "qcow2"}]),
        3,
    );
    assert!(
        out.error_type().is_some(),
        "wrong WebDAV password: {}",
        out.stdout
    );
    l.call("delete_stemcell", json!([stemcell])).ok();

    let calls = l.calls.lock().unwrap();
    let called: BTreeSet<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    for m in METHODS {
        assert!(called.contains(m.name), "{} was not exercised", m.name);
    }
    for (method, out) in calls.iter() {
        assert_clean(&format!("{method} response"), &out.stdout);
        assert_clean(&format!("{method} stderr"), &out.stderr);
        if method == "create_vm" {
            assert!(
                out.stderr.contains("DEBUG"),
                "debug logging was on: {}",
                out.stderr
            );
        }
    }
    assert_clean("companion server log", &l.server.log());
    assert_clean("lab companion server log", &l.lab.server.log());
    let ironic_log = std::fs::read_to_string(l.lab.ironic.log_path()).unwrap_or_default();
    assert!(!ironic_log.is_empty());
    for s in all_secrets() {
        assert!(!ironic_log.contains(s), "Ironic's log shows {s}");
    }
}
