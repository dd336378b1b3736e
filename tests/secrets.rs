//! Secrets stay where they are needed. Every credential gets a unique marker: the CPI's own
//! (Ironic, the two WebDAV repositories, the registry), what the agent needs from the CPI config
//! (the mbus and blobstore passwords), everything in each VM's `env` (a marker set per VM), the
//! per-VM registry secret create_vm makes, and the secrets of failure paths (wrong passwords,
//! `user:password@` in URLs, a password YAML read as a number, files that are not stemcells).
//! Every CPI method runs through the real binary with debug logging, succeeding and failing,
//! plus `--check-config` and `pool`.
//!
//! A marker may then appear only in the config drive of the VM that needs it (and, for a VM of
//! a registry-era stemcell, in its registry settings, which only it can read): in no response,
//! no stderr, no log of the companion servers or Ironic, no other VM's drive, no file the
//! servers keep once the VMs are gone, and in Ironic's database only inside the (compressed)
//! config drive.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{json, Value};

use ironic_cpi::rpc::dispatch::METHODS;
use ironic_cpi_testkit::cpi::{
    config_variant as write_config, make_stemcell_image, node_of, CallOutcome, CpiLab,
};
use ironic_cpi_testkit::files::files_under;
use ironic_cpi_testkit::ironic::{enroll_pool, IronicLabOptions, LabAuth};
use ironic_cpi_testkit::server::{ServerLab, ServerOpts};

/// The CPI's own credentials: nothing it writes may show them.
const IRONIC_PW: &str = "S3cret-Ironic-pw-7f1c";
const STEMCELL_DAV_PW: &str = "S3cret-Stemcell-dav-pw-2b9e";
const METADATA_DAV_PW: &str = "S3cret-Metadata-dav-pw-6d1a";
const REGISTRY_PW: &str = "S3cret-Registry-pw-c4d0";
/// From the CPI config, for every agent: only config drives (and registry settings) carry them.
const MBUS_PW: &str = "S3cret-Mbus-pw-91aa";
const BLOBSTORE_CFG_PW: &str = "S3cret-Blobstore-cfg-pw-3e07";
/// Failure paths.
const WRONG_IRONIC_PW: &str = "S3cret-Wrong-ironic-pw-33ab";
const URL_USERINFO_PW: &str = "S3cret-Url-userinfo-pw-e810";
const UNREACHABLE_REGISTRY_PW: &str = "S3cret-Unreachable-registry-pw-71f2";
const WRONG_WEBDAV_PW: &str = "S3cret-Wrong-webdav-pw-a5c7";
const REPO_URL_PW: &str = "S3cret-Repo-url-pw-58c3";
/// A password YAML read as a number (unquoted): digits only.
const NUMERIC_PW: u64 = 739_182_645_501_337;
/// The content of files create_stemcell is given that are not stemcells.
const FILE_MARKER: &str = "S3cret-File-content-0d4f";
const LINKED_FILE_MARKER: &str = "S3cret-Linked-file-content-9a2e";

const CPI_OWN: [&str; 4] = [IRONIC_PW, STEMCELL_DAV_PW, METADATA_DAV_PW, REGISTRY_PW];
const FOR_AGENTS: [&str; 2] = [MBUS_PW, BLOBSTORE_CFG_PW];
const FAILURES: [&str; 7] = [
    WRONG_IRONIC_PW,
    URL_USERINFO_PW,
    UNREACHABLE_REGISTRY_PW,
    WRONG_WEBDAV_PW,
    REPO_URL_PW,
    FILE_MARKER,
    LINKED_FILE_MARKER,
];

/// The markers of one VM's `env`: every credential an env carries, and a value of its own.
fn env_markers(vm: &str) -> [String; 4] {
    [
        format!("S3cret-Env-password-{vm}"),
        format!("S3cret-Mbus-private-key-{vm}"),
        format!("S3cret-Env-blobstore-pw-{vm}"),
        format!("S3cret-Env-custom-{vm}"),
    ]
}

fn env(vm: &str) -> Value {
    let [pw, key, blob, custom] = env_markers(vm);
    json!({"bosh": {
        "password": pw,
        "mbus": {"cert": {"ca": "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n",
                          "certificate": "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n",
                          "private_key": format!("-----BEGIN RSA PRIVATE KEY-----\n{key}\n-----END RSA PRIVATE KEY-----\n")}},
        "blobstores": [{"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250",
                        "user": "agent", "password": blob}}],
        "group": "d-dep-web"},
        "custom": {"token": custom}})
}

/// The VMs of the test, by the name their env markers carry.
const VMS: [&str; 5] = ["vm1", "vm2", "vm3", "vm4", "vm5"];

/// Every marker, with the registry secrets create_vm made (found in the drives).
fn all_markers(generated: &[String]) -> Vec<String> {
    let mut all: Vec<String> = CPI_OWN
        .iter()
        .chain(FOR_AGENTS.iter())
        .chain(FAILURES.iter())
        .map(|s| s.to_string())
        .collect();
    all.push(NUMERIC_PW.to_string());
    for vm in VMS {
        all.extend(env_markers(vm));
    }
    all.extend(generated.iter().cloned());
    all
}

fn assert_clean(what: &str, text: &str, markers: &[String]) {
    for m in markers {
        assert!(
            !text.contains(m.as_str()),
            "{what} shows secret {m}:\n{text}"
        );
    }
}

struct Lab {
    lab: CpiLab,
    /// The companion server holding the unique WebDAV and registry passwords.
    server: ServerLab,
    config: PathBuf,
    dir: tempfile::TempDir,
    /// Every call and tool run, for the final check: (what, stdout, stderr).
    outputs: Mutex<Vec<(String, String, String)>>,
    methods: Mutex<BTreeSet<String>>,
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
            false,
        );
        let server = ServerLab::start(ServerOpts {
            anonymous_read: true,
            binary: Some(ironic_cpi_testkit::binaries::server().unwrap()),
            extra: json!({"users": [
                {"username": "cpi-stemcells", "password": STEMCELL_DAV_PW, "role": "write"},
                {"username": "cpi-metadata", "password": METADATA_DAV_PW, "role": "write"},
                {"username": "cpi-registry", "password": REGISTRY_PW, "role": "write"},
            ]}),
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(&lab.config_path, dir.path(), "cpi.json", |c| {
            c["stemcell_repository"] = json!({"url": format!("{}/images", server.url),
                "username": "cpi-stemcells", "password": STEMCELL_DAV_PW, "timeout": 60});
            c["metadata_repository"] = json!({"url": format!("{}/metadata", server.url),
                "username": "cpi-metadata", "password": METADATA_DAV_PW, "timeout": 60});
            c["registry"] = json!({"endpoint": format!("{}/registry", server.url),
                                   "username": "cpi-registry", "password": REGISTRY_PW});
            c["agent"]["mbus"] = json!(format!("nats://nats:{MBUS_PW}@10.0.0.6:4222"));
            c["agent"]["blobstore"] = json!({"provider": "dav", "options": {
                "endpoint": "http://10.0.0.6:25250", "user": "agent", "password": BLOBSTORE_CFG_PW}});
        });
        Lab {
            lab,
            server,
            config,
            dir,
            outputs: Mutex::new(Vec::new()),
            methods: Mutex::new(BTreeSet::new()),
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
        self.record(method, &out.stdout, &out.stderr);
        self.methods.lock().unwrap().insert(method.to_string());
        out
    }

    fn call(&self, method: &str, args: Value) -> CallOutcome {
        self.call_with(&self.config, method, args, 3)
    }

    fn record(&self, what: &str, stdout: &str, stderr: &str) {
        self.outputs.lock().unwrap().push((
            what.to_string(),
            stdout.to_string(),
            stderr.to_string(),
        ));
    }

    /// `ironic_cpi -c CONFIG ARGS...` as an operator runs it.
    fn tool(&self, config: &Path, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ironic_cpi"))
            .arg("-c")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        self.record(&format!("ironic_cpi {args:?}"), &stdout, &stderr);
        (out.status.success(), stdout, stderr)
    }

    fn variant(&self, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        write_config(&self.config, self.dir.path(), name, edit)
    }
}

/// Every file of the config drive Ironic got for `node`: path -> bytes, and the ISO itself.
fn drive_files(lab: &CpiLab, node: &str) -> Vec<(String, Vec<u8>)> {
    let (iso, _dir, iso_path) = lab.inline_config_drive(node);
    let isoinfo = |args: &[&str]| {
        let out = Command::new("isoinfo")
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

/// Check VM `vm`'s drive: it holds what its agent needs, and nothing else. Returns the registry
/// secret its endpoint carries (registry mode).
fn check_drive(lab: &CpiLab, node: &str, vm: &str, registry_mode: bool) -> Option<String> {
    let files = drive_files(lab, node);
    let user_data = files
        .iter()
        .find(|(p, _)| p == "ec2/latest/user-data")
        .unwrap_or_else(|| panic!("{node}: no user-data"));
    let user_data: Value = serde_json::from_slice(&user_data.1).unwrap();
    let secret = registry_mode.then(|| {
        let endpoint =
            url::Url::parse(user_data["registry"]["endpoint"].as_str().unwrap()).unwrap();
        assert_eq!(endpoint.username(), node, "the VM's own registry user");
        endpoint.password().expect("a per-VM secret").to_string()
    });
    let own: Vec<String> = env_markers(vm).into();
    let needed: Vec<String> = if registry_mode {
        secret.iter().cloned().collect()
    } else {
        own.iter()
            .cloned()
            .chain(FOR_AGENTS.iter().map(|s| s.to_string()))
            .collect()
    };
    for (path, content) in &files {
        let text = String::from_utf8_lossy(content);
        let settings_file = path.ends_with("user-data") || path.ends_with("user_data");
        for m in all_markers(&[]) {
            let allowed = needed.contains(&m) && (settings_file || path == "<whole image>");
            if !allowed {
                assert!(!text.contains(&m), "config drive of {vm}: {path} holds {m}");
            }
        }
        if settings_file {
            for m in &needed {
                assert!(
                    text.contains(m.as_str()),
                    "{path} of {vm} lacks {m}: the agent needs it"
                );
            }
        }
    }
    secret
}

/// The first example request of a method in `spec/`: its arguments.
fn spec_arguments(method: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("spec/{method}.json"));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["examples"][0]["request"]["arguments"].clone()
}

#[test]
fn secrets_appear_only_in_the_config_drive_of_the_vm_that_needs_them() {
    // Debug logging in every CPI process: secrets must stay out of every level.
    std::env::set_var("RUST_LOG", "debug");
    let l = Lab::start();
    let rc = "secrets";
    enroll_pool(&l.lab.client().unwrap(), rc, 0x61, 4);
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
    let create = |config: &Path, vm: &str, stemcell_api: u32| {
        l.call_with(
            config,
            "create_vm",
            json!([uuid::Uuid::new_v4().to_string(), stemcell, {"resource_class": rc},
                   network, [], env(vm)]),
            stemcell_api,
        )
    };
    // Registry-less (stemcell api 3) and registry mode (stemcell api 1), inline drives.
    let vm1 = create(&l.config, "vm1", 3).vm_cid();
    let n1 = node_of(&vm1);
    check_drive(&l.lab, n1, "vm1", false);
    let vm2 = create(&l.config, "vm2", 1).vm_cid();
    let n2 = node_of(&vm2);
    let vm2_secret = check_drive(&l.lab, n2, "vm2", true).unwrap();
    let generated = vec![vm2_secret.clone()];

    // The registry holds vm2's settings, readable with vm2's secret only.
    let settings = |user: &str, pw: &str| {
        reqwest::blocking::Client::new()
            .get(l.server.at(&format!("registry/instances/{n2}/settings")))
            .basic_auth(user, Some(pw))
            .send()
            .unwrap()
    };
    let r = settings(n2, &vm2_secret);
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    for m in env_markers("vm2")
        .iter()
        .map(String::as_str)
        .chain(FOR_AGENTS)
    {
        assert!(text.contains(m), "the registry holds vm2's settings ({m})");
    }
    assert_eq!(settings(n1, &vm2_secret).status().as_u16(), 401);
    assert_eq!(
        reqwest::blocking::get(l.server.at(&format!("registry/instances/{n2}/settings")))
            .unwrap()
            .status()
            .as_u16(),
        401,
        "no anonymous reads"
    );

    // A drive passed by URL: published under an unguessable path, gone once deployed.
    let by_url = l.variant("publish.json", |c| {
        c["defaults"]["publish_configdrive"] = json!(true)
    });
    let vm3 = create(&by_url, "vm3", 3).vm_cid();
    let n3 = node_of(&vm3);
    let info = l.lab.ironic.stored_instance_info(n3).unwrap();
    let url = info["configdrive"].as_str().unwrap().to_string();
    let prefix = format!("{}/metadata/{n3}/", l.server.url);
    let token = url
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("/configdrive.gz.b64"))
        .unwrap_or_else(|| panic!("unexpected config drive URL {url}"));
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "256 random bits: {token}"
    );
    assert_eq!(reqwest::blocking::get(&url).unwrap().status().as_u16(), 404);
    assert!(
        files_under(&l.server.root.join("metadata")).is_empty(),
        "a published drive outlived its deploy"
    );
    let generated: Vec<String> = generated.into_iter().chain([token.to_string()]).collect();

    l.call("has_vm", json!([vm1])).ok();
    l.call(
        "set_vm_metadata",
        json!([vm1, {"director": "d", "name": "web/0", "deployment": "dep"}]),
    )
    .ok();
    l.call("reboot_vm", json!([vm1])).ok();
    l.call(
        "calculate_vm_cloud_properties",
        json!([{"cpu": 2, "ram": 1024, "ephemeral_disk_size": 1024}]),
    )
    .ok();
    let disk = l
        .call("create_disk", json!([1024, {}, vm2]))
        .ok()
        .as_str()
        .unwrap()
        .to_string();
    // Registry mode: attach and detach rewrite vm2's settings; its secret keeps working.
    l.call_with(&l.config, "attach_disk", json!([vm2, disk]), 1)
        .ok();
    assert_eq!(settings(n2, &vm2_secret).status().as_u16(), 200);
    l.call("get_disks", json!([vm2])).ok();
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
    l.call("configure_networks", json!([vm1, network]));
    l.call("current_vm_id", json!([]));
    l.call_with(&l.config, "detach_disk", json!([vm2, disk]), 1)
        .ok();
    l.call("delete_disk", json!([disk])).ok();

    // A create_vm that fails after its drive was built (a network naming a MAC the node lacks):
    // the rollback leaves nothing behind.
    let mut bad_net = network.clone();
    bad_net["default"]["mac"] = json!("52:54:61:ff:ff:ff");
    let out = l.call_with(
        &l.config,
        "create_vm",
        json!([uuid::Uuid::new_v4().to_string(), stemcell, {"resource_class": rc},
               bad_net, [], env("vm4")]),
        1,
    );
    assert!(out.error_type().is_some(), "{}", out.stdout);

    // Failure paths, each with a secret of its own.
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
        let config = l.variant(name, edit);
        let out = l.call_with(&config, "has_vm", json!([vm1]), 3);
        assert!(out.error_type().is_some(), "{name}: {}", out.stdout);
    }
    let no_registry = l.variant("no-registry.json", |c| {
        c["registry"] = json!({"endpoint": "http://127.0.0.1:9/registry",
                               "username": "r", "password": UNREACHABLE_REGISTRY_PW});
    });
    let out = l.call_with(
        &no_registry,
        "create_vm",
        json!([uuid::Uuid::new_v4().to_string(), stemcell, {"resource_class": rc}, network, [], env("vm5")]),
        1,
    );
    out.assert_error("Bosh::Clouds::VMCreationFailed");
    let wrong_dav = l.variant("wrong-dav.json", |c| {
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

    // create_stemcell on files that are not stemcells: a config-like file, and one behind a
    // symlink named `image`. The error names the file, never its content.
    let not_stemcells = tempfile::tempdir().unwrap();
    let plain = not_stemcells.path().join("cpi.json");
    std::fs::write(
        &plain,
        format!("{{\"password\": \"{FILE_MARKER}\"}}\n{}", "x".repeat(2000)),
    )
    .unwrap();
    let target = not_stemcells.path().join("shadow");
    std::fs::write(
        &target,
        format!("root:{LINKED_FILE_MARKER}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    let link = not_stemcells.path().join("image");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for file in [&plain, &link] {
        let out = l.call(
            "create_stemcell",
            json!([file.to_str().unwrap(), {"name": "s", "version": "3", "disk_format": "qcow2"}]),
        );
        assert!(out.error_type().is_some(), "{}", out.stdout);
    }

    // Every method against a broken config (unreachable Ironic with credentials in its URL,
    // wrong repository and registry passwords), with the spec's example arguments and marked env.
    let broken = l.variant("broken.json", |c| {
        c["ironic"]["url"] = json!(format!("http://cpi:{URL_USERINFO_PW}@127.0.0.1:9"));
        c["ironic"]["connect_timeout"] = json!(1);
        c["ironic"]["retry"] = json!({"max_attempts": 1, "initial_delay": 0.05, "max_delay": 0.1});
        c["stemcell_repository"]["password"] = json!(WRONG_WEBDAV_PW);
        c["metadata_repository"]["password"] = json!(WRONG_WEBDAV_PW);
        c["registry"]["password"] = json!(WRONG_WEBDAV_PW);
    });
    for m in METHODS {
        let mut args = spec_arguments(m.name);
        if m.name == "create_vm" {
            args[5] = env("vm5");
        }
        l.call_with(&broken, m.name, args.clone(), 1);
        l.call_with(&broken, m.name, args, 3);
    }

    // A password YAML read as a number, and credentials in repository URLs: every method's
    // config error, and --check-config, name the key and never the value.
    let numeric = l.variant("numeric.json", |c| {
        c["registry"]["password"] = json!(NUMERIC_PW);
    });
    let out = l.call_with(&numeric, "has_vm", json!([vm1]), 3);
    assert!(out.error_type().is_some(), "{}", out.stdout);
    assert!(out.stdout.contains("registry.password"), "{}", out.stdout);
    let (ok, _, stderr) = l.tool(&numeric, &["--check-config"]);
    assert!(!ok && stderr.contains("registry.password"), "{stderr}");
    let url_creds = l.variant("url-creds.json", |c| {
        c["stemcell_repository"]["url"] =
            json!(format!("http://cpi:{REPO_URL_PW}@127.0.0.1:9/images"));
        c["metadata_repository"]["url"] =
            json!(format!("http://cpi:{REPO_URL_PW}@127.0.0.1:9/metadata"));
        c["ironic"]["url"] = json!(format!("http://cpi:{URL_USERINFO_PW}@127.0.0.1:9"));
    });
    let (ok, stdout, _) = l.tool(&url_creds, &["--check-config"]);
    assert!(ok && stdout.contains("127.0.0.1:9/images"), "{stdout}");
    let (ok, stdout, stderr) = l.tool(&l.config, &["pool"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(n1), "{stdout}");

    l.call("delete_vm", json!([vm1])).ok();
    l.call("delete_vm", json!([vm2])).ok();
    l.call("delete_vm", json!([vm3])).ok();
    l.call("delete_stemcell", json!([stemcell])).ok();
    assert_eq!(settings(n2, &vm2_secret).status().as_u16(), 401);

    // Every method ran, and no output of any run shows any marker.
    let called = l.methods.lock().unwrap().clone();
    for m in METHODS {
        assert!(called.contains(m.name), "{} was not exercised", m.name);
    }
    let markers = all_markers(&generated);
    let mut debug_seen = false;
    for (what, stdout, stderr) in l.outputs.lock().unwrap().iter() {
        assert_clean(&format!("{what} stdout"), stdout, &markers);
        assert_clean(&format!("{what} stderr"), stderr, &markers);
        debug_seen |= stderr.contains("DEBUG");
    }
    assert!(debug_seen, "debug logging was on");
    assert_clean("companion server log", &l.server.log(), &markers);
    assert_clean("lab companion server log", &l.lab.server.log(), &markers);
    let ironic_log = std::fs::read_to_string(l.lab.ironic.log_path()).unwrap_or_default();
    assert!(!ironic_log.is_empty());
    assert_clean("Ironic's log", &ironic_log, &markers);
    // Ironic's database keeps the drives it was given (gzipped), nothing in plain text.
    let db = std::fs::read(l.lab.ironic.dir.join("ironic.sqlite")).unwrap();
    assert_clean("Ironic's database", &String::from_utf8_lossy(&db), &markers);
    // The VMs are gone: nothing the servers keep holds a marker (registry settings and digests,
    // published drives, stemcells).
    for root in [&l.server.root, &l.lab.server.root] {
        for file in files_under(root) {
            let content = std::fs::read(&file).unwrap();
            assert_clean(
                &file.display().to_string(),
                &String::from_utf8_lossy(&content),
                &markers,
            );
        }
    }
}
