//! The BOSH release made, compiled and installed by the real BOSH programs (`ironic_cpi_testkit::bosh_tools`):
//!
//! 1. `bosh create-release --force --tarball` of the working tree (a copy of it: `bosh add-blob`
//!    writes config/blobs.yml, which the tree must keep), and `bosh inspect-local-release`;
//! 2. an edit to a source file changes the `ironic_cpi` package's fingerprint, and nothing else's;
//! 3. `bosh-agent compile` (scripts/release/compile-release) compiles both packages the way a
//!    director's compilation VM does, without network, with a hostile environment passed on to
//!    packaging as `bosh create-env` passes the operator's (CARGO_TARGET_DIR, RUSTFLAGS,
//!    RUSTC_WRAPPER, ... and a ~/.cargo/config.toml);
//! 4. `bosh create-env` installs that compiled release, renders both jobs with the CLI's own
//!    renderer (compared with scripts/release/render-template.rb's output), and deploys a VM
//!    through the compiled CPI onto the real Ironic of the lab; the real agent, started on the
//!    config drive the CPI built, answers the CLI; `bosh delete-env` takes it all down again.
//!
//! Every step prints its time; the compile takes most of it (several minutes on 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use ironic_cpi::ironic::NodeQuery;
use ironic_cpi_testkit::bosh_tools;
use ironic_cpi_testkit::certs;
use ironic_cpi_testkit::cpi::make_stemcell_image;
use ironic_cpi_testkit::ironic::{
    enroll_node, pool_state, EnrollTarget, IronicLabOptions, NodeSpec,
};
use ironic_cpi_testkit::process::repo_root;
use ironic_cpi_testkit::process::{free_port, ChildProcess, SpawnOptions};

mod common;

/// Straight to stderr, past the test harness's capture, so that the figures always show.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "release_packaging: {line}");
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    report(&format!("{what}: {:.1} s", start.elapsed().as_secs_f64()));
    out
}

fn bosh_cli() -> PathBuf {
    bosh_tools::bosh_cli().unwrap_or_else(|e| panic!("{e}"))
}

/// The bosh CLI with its state (`~/.bosh`) in `home`, run in `dir`.
fn bosh(home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bosh_cli());
    cmd.env("HOME", home)
        .env_remove("BOSH_ENVIRONMENT")
        .current_dir(dir);
    cmd
}

/// The working tree as git sees it (tracked and new files, ignored ones left out) copied to
/// `dest`: the release directory `bosh create-release` reads.
fn copy_working_tree(dest: &Path) {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo_root())
        .output()
        .expect("git");
    assert!(out.status.success(), "git ls-files");
    for rel in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).unwrap());
        let from = repo_root().join(rel);
        // Deleted but not yet committed.
        if !from.exists() {
            continue;
        }
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// `Rows` of the table named `content` in a bosh `--json` answer.
fn table(answer: &Value, content: &str) -> Vec<Value> {
    answer["Tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["Content"] == json!(content))
        .unwrap_or_else(|| panic!("no {content} table in {answer}"))["Rows"]
        .as_array()
        .unwrap()
        .clone()
}

/// name -> fingerprint of the jobs or packages of a release (`bosh ... --json`).
fn fingerprints(answer: &Value, content: &str) -> std::collections::BTreeMap<String, String> {
    let key = if content == "jobs" { "job" } else { "package" };
    table(answer, content)
        .iter()
        .map(|row| {
            let (name, fp) = row[key].as_str().unwrap().split_once('/').unwrap();
            (name.to_string(), fp.trim().to_string())
        })
        .collect()
}

fn json_output(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bosh --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The names in a gzipped tarball, `./` stripped.
fn tarball_names(path: &Path) -> Vec<String> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            p.trim_start_matches("./").to_string()
        })
        .collect()
}

/// One file of a gzipped tarball.
fn tarball_file(path: &Path, name: &str) -> Vec<u8> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let p = entry.path().unwrap().to_string_lossy().into_owned();
        if p.trim_start_matches("./") == name {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            return data;
        }
    }
    panic!("{name} is not in {}", path.display())
}

#[test]
fn cargo_manifest_digests_match_cargo_toml_and_cargo_lock() {
    let recorded = std::fs::read_to_string(repo_root().join("src/cargo-manifest.sha256")).unwrap();
    let expected = format!(
        "{}  Cargo.toml\n{}  Cargo.lock\n",
        sha256_hex(&repo_root().join("Cargo.toml")),
        sha256_hex(&repo_root().join("Cargo.lock"))
    );
    assert_eq!(
        recorded, expected,
        "src/cargo-manifest.sha256 is stale: the release would compile with other crates than \
         this tree. Run scripts/release/prepare-blobs (or `sha256sum Cargo.toml Cargo.lock > \
         src/cargo-manifest.sha256`) and commit src/cargo-manifest.sha256."
    );
}

/// The ironic_cpi packaging refuses a vendor blob whose Cargo.toml or Cargo.lock are not the
/// ones src/ names, before compiling anything.
#[test]
fn a_stale_vendor_blob_is_refused() {
    let dir = TempDir::new().unwrap();
    let compile = dir.path().join("compile");
    std::fs::create_dir_all(compile.join("ironic_cpi")).unwrap();
    std::fs::create_dir_all(compile.join("bin")).unwrap();
    std::fs::write(compile.join("lib.rs"), "").unwrap();
    std::fs::write(compile.join("bin/ironic_cpi.rs"), "fn main() {}").unwrap();
    // A vendor blob made for another Cargo.lock.
    let blob = dir.path().join("blob");
    std::fs::create_dir_all(blob.join("vendor")).unwrap();
    std::fs::copy(repo_root().join("Cargo.toml"), blob.join("Cargo.toml")).unwrap();
    std::fs::write(blob.join("Cargo.lock"), "# an older lock file\n").unwrap();
    let status = Command::new("tar")
        .arg("-czf")
        .arg(compile.join("ironic_cpi/vendor.tar.gz"))
        .arg("-C")
        .arg(&blob)
        .args(["Cargo.toml", "Cargo.lock", "vendor"])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(
        repo_root().join("src/cargo-manifest.sha256"),
        compile.join("cargo-manifest.sha256"),
    )
    .unwrap();
    let install = dir.path().join("install");
    let out = Command::new("bash")
        .arg(repo_root().join("packages/ironic_cpi/packaging"))
        .current_dir(&compile)
        .env("BOSH_COMPILE_TARGET", &compile)
        .env("BOSH_INSTALL_TARGET", &install)
        .env("BOSH_PACKAGES_DIR", dir.path().join("packages"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("prepare-blobs"), "{stderr}");
    assert!(!install.join("bin").exists());
}

/// The rust packaging takes exactly one toolchain blob: after a version change the old one must
/// be removed (`bosh remove-blob`), not silently picked.
#[test]
fn the_rust_package_refuses_more_than_one_toolchain() {
    let dir = TempDir::new().unwrap();
    let compile = dir.path().join("compile");
    std::fs::create_dir_all(compile.join("rust")).unwrap();
    for version in ["1.94.0", "1.95.0"] {
        let name = format!("rust/rust-{version}-x86_64-unknown-linux-gnu.tar.gz");
        std::fs::write(compile.join(name), b"").unwrap();
    }
    let out = Command::new("bash")
        .arg(repo_root().join("packages/rust/packaging"))
        .current_dir(&compile)
        .env("BOSH_COMPILE_TARGET", &compile)
        .env("BOSH_INSTALL_TARGET", dir.path().join("install"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("exactly one"), "{stderr}");
}

#[test]
fn release_is_made_compiled_and_installed_by_the_bosh_tools() {
    let total = Instant::now();
    let cache = repo_root().join(".cache/release");
    std::fs::create_dir_all(&cache).unwrap();
    // Under .cache/: release trees, compiled packages and ~/.bosh are large; /tmp may be tmpfs.
    let work = TempDir::new_in(&cache).unwrap();
    let home = work.path().join("home");
    let tree = work.path().join("ironic-cpi-release");
    std::fs::create_dir_all(&home).unwrap();
    copy_working_tree(&tree);

    // 1. Blobs (cached across runs in .cache/release/blobs), create-release, inspect.
    let blobs = cache.join("blobs");
    run(
        "prepare-blobs (the toolchain and vendor tarballs are reused while their inputs stay)",
        Command::new(tree.join("scripts/release/prepare-blobs"))
            .arg("--output")
            .arg(&blobs),
    );
    let rust_blob = std::fs::read_dir(blobs.join("rust"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy()
                .ends_with("-x86_64-unknown-linux-gnu.tar.gz")
        })
        .expect("the toolchain blob");
    let rust_name = format!("rust/{}", rust_blob.file_name().unwrap().to_string_lossy());
    run(
        "bosh add-blob (toolchain)",
        bosh(&home, &tree)
            .arg("add-blob")
            .arg(&rust_blob)
            .arg(&rust_name),
    );
    run(
        "bosh add-blob (vendored crates)",
        bosh(&home, &tree)
            .arg("add-blob")
            .arg(blobs.join("ironic_cpi/vendor.tar.gz"))
            .arg("ironic_cpi/vendor.tar.gz"),
    );
    let release = work.path().join("ironic-cpi-dev.tgz");
    let created = json_output(&run(
        "bosh create-release --force --tarball",
        bosh(&home, &tree)
            .args(["create-release", "--force", "--json", "--tarball"])
            .arg(&release),
    ));
    let inspected = json_output(&run(
        "bosh inspect-local-release",
        bosh(&home, work.path())
            .args(["inspect-local-release", "--json"])
            .arg(&release),
    ));
    let packages = fingerprints(&inspected, "packages");
    let jobs = fingerprints(&inspected, "jobs");
    assert_eq!(
        packages.keys().collect::<Vec<_>>(),
        ["ironic_cpi", "rust"],
        "{inspected}"
    );
    assert_eq!(
        jobs.keys().collect::<Vec<_>>(),
        ["ironic_cpi", "ironic_cpi_server"],
        "{inspected}"
    );
    assert_eq!(fingerprints(&created, "packages"), packages);
    report(&format!(
        "release tarball: {:.0} MiB",
        std::fs::metadata(&release).unwrap().len() as f64 / 1048576.0
    ));

    // The ironic_cpi package holds every source file of the crates the two programs are built
    // from, the workspace members' manifests, the digests and the blob; of the test kit
    // (src/lab) only its manifest, since cargo loads every member.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&release)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let in_package: std::collections::BTreeSet<String> =
        tarball_names(&unpacked.join("packages/ironic_cpi.tgz"))
            .into_iter()
            .collect();
    let mut sources = Vec::new();
    collect_rs(
        &repo_root().join("src"),
        &repo_root().join("src"),
        &mut sources,
    );
    assert!(sources.len() > 50, "{sources:?}");
    for source in &sources {
        if source.starts_with("lab/") {
            assert!(
                !in_package.contains(source),
                "{source}: the test kit is not built by the release"
            );
        } else {
            assert!(
                in_package.contains(source),
                "{source} is not in the package"
            );
        }
    }
    for file in [
        "common/Cargo.toml",
        "protocol/Cargo.toml",
        "http/Cargo.toml",
        "ironic/Cargo.toml",
        "server/Cargo.toml",
        "lab/Cargo.toml",
        "cargo-manifest.sha256",
        "ironic_cpi/vendor.tar.gz",
        "packaging",
    ] {
        assert!(in_package.contains(file), "{file}: {in_package:?}");
    }

    // 2. One edited source file: a new ironic_cpi package, the same rust package and jobs.
    let lib = tree.join("src/lib.rs");
    let mut text = std::fs::read_to_string(&lib).unwrap();
    text.push_str("\n// an edit\n");
    std::fs::write(&lib, text).unwrap();
    let edited = json_output(&run(
        "bosh create-release --force (after an edit to src/lib.rs)",
        bosh(&home, &tree).args(["create-release", "--force", "--json"]),
    ));
    let after = fingerprints(&edited, "packages");
    assert_ne!(
        after["ironic_cpi"], packages["ironic_cpi"],
        "the edit must change the package"
    );
    assert_eq!(after["rust"], packages["rust"]);
    assert_eq!(fingerprints(&edited, "jobs"), jobs);

    // 3. The real agent compiles the release, offline, with a hostile environment.
    let compiled_dir = work.path().join("compiled");
    let agent_work = work.path().join("agent");
    let hostile = hostile_environment(&agent_work);
    let mut compile = Command::new(repo_root().join("scripts/release/compile-release"));
    for var in &hostile {
        compile.arg("--env").arg(var);
    }
    compile.arg(&release).arg(&compiled_dir).arg(&agent_work);
    run(
        &format!("bosh-agent compile (both packages; environment: {hostile:?})"),
        &mut compile,
    );
    let compiled = std::fs::read_dir(&compiled_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tgz"))
        .expect("a compiled release tarball");
    let manifest: Value = serde_yaml_value(&tarball_file(&compiled, "release.MF"));
    let compiled_names: Vec<&str> = manifest["compiled_packages"]
        .as_array()
        .expect("compiled_packages")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(compiled_names.len(), 2, "{manifest}");
    // The hostile ~/.cargo/config.toml and CARGO_TARGET_DIR saw nothing.
    assert!(!agent_work.join("hostile-target").exists());

    // 4. create-env with the compiled release, onto the lab's Ironic, and delete-env.
    create_env_and_delete_env(work.path(), &home, &compiled, &tree);
    // Everything is removed from the cache except the blobs (and what other runs keep).
    drop(work);
    report(&format!(
        "total (blobs, two create-release, compile, create-env, delete-env): {:.1} s",
        total.elapsed().as_secs_f64()
    ));
}

fn collect_rs(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// YAML (release.MF) to JSON, through Ruby's parser (the template tests' Ruby).
fn serde_yaml_value(yaml: &[u8]) -> Value {
    let mut child = Command::new("ruby")
        .args([
            "-ryaml",
            "-rjson",
            "-e",
            "puts JSON.dump(YAML.safe_load(STDIN.read))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ruby");
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What a developer's shell may hold, every item of which breaks a packaging that lets it in:
/// binaries built elsewhere or for another target, a wrapper or flags that make rustc or the
/// linker fail, a C compiler that fails (ring compiles C), and a cargo config in HOME (the
/// agent's HOME is /var/vcap, an ancestor of the compile directory).
fn hostile_environment(agent_work: &Path) -> Vec<String> {
    let target = agent_work.join("hostile-target");
    let cargo_config = agent_work.join("vcap/.cargo/config.toml");
    std::fs::create_dir_all(cargo_config.parent().unwrap()).unwrap();
    std::fs::write(
        &cargo_config,
        format!(
            "[build]\nrustc-wrapper = \"/bin/false\"\ntarget-dir = \"{}\"\n\
             rustflags = [\"-C\", \"link-arg=-Wl,--no-such-linker-option\"]\n\
             [target.x86_64-unknown-linux-gnu]\nlinker = \"/bin/false\"\n",
            target.display()
        ),
    )
    .unwrap();
    vec![
        format!("CARGO_TARGET_DIR={}", target.display()),
        "CARGO_BUILD_TARGET=wasm32-unknown-unknown".into(),
        "RUSTFLAGS=-C link-arg=-Wl,--no-such-linker-option".into(),
        "RUSTC_WRAPPER=/bin/false".into(),
        "CC=/bin/false".into(),
        "CARGO_PROFILE_RELEASE_LTO=no-such-lto".into(),
    ]
}

/// A stemcell tarball as `bosh create-env` takes it: `image` (an OpenStack raw stemcell's image
/// tarball holding `root.img`) and `stemcell.MF`.
fn stemcell_tarball(dir: &Path) -> PathBuf {
    let src = dir.join("stemcell");
    std::fs::create_dir_all(&src).unwrap();
    make_stemcell_image(&src, 1024 * 1024 + 3, false).unwrap();
    let name = "bosh-openstack-kvm-ubuntu-jammy-go_agent-raw";
    let manifest = json!({
        "name": name, "version": "1.1", "api_version": 3, "operating_system": "ubuntu-jammy",
        "stemcell_formats": ["openstack-raw"],
        "cloud_properties": {"name": name, "version": "1.1", "disk_format": "raw",
            "container_format": "bare", "os_type": "linux", "os_distro": "ubuntu",
            "architecture": "x86_64", "infrastructure": "openstack", "hypervisor": "kvm"},
    });
    std::fs::write(src.join("stemcell.MF"), manifest.to_string()).unwrap();
    let tarball = dir.join("stemcell.tgz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .args(["stemcell.MF", "image"])
        .status()
        .unwrap();
    assert!(status.success());
    tarball
}

/// Runs `bosh create-env` until the VM exists, starts the real agent on its config drive, lets
/// create-env finish, compares the CLI's rendering of both jobs with render-template.rb's, then
/// `bosh delete-env` and checks that the pool is as it was.
fn create_env_and_delete_env(work: &Path, home: &Path, compiled: &Path, tree: &Path) {
    let started = Instant::now();
    let lab = common::start_lab(IronicLabOptions::default(), false, false);
    let client = lab.client().unwrap();
    let mut spec = NodeSpec::new("create-env-0");
    spec.resource_class = Some("create-env".into());
    spec.macs = vec!["52:54:00:ce:00:01".into(), "52:54:00:ce:00:02".into()];
    spec.target = EnrollTarget::Available;
    let node = enroll_node(&client, &spec).unwrap().uuid;
    let before = pool_state(&client, "create-env");
    report(&format!(
        "lab for create-env: {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let cert = certs::mbus_cert(work, "bosh-director", "127.0.0.1").unwrap();
    let port = free_port().unwrap();
    let mbus = format!("https://mbus:mbus-pw@127.0.0.1:{port}");
    let agent_blobs = work.join("agent-blobstore");
    // CA files, proxies and the server's TLS pair too, so that every template has content.
    let props = json!({
        "ironic": {"url": lab.ironic.url, "ca_cert": cert["ca"]},
        "env": {"no_proxy": "127.0.0.1,localhost"},
        "stemcell_repository": {"url": format!("{}/images", lab.server.url),
                                "username": "writer", "password": "writer-pw"},
        "metadata_repository": {"url": format!("{}/metadata", lab.server.url),
                                "username": "writer", "password": "writer-pw"},
        "defaults": {"configdrive_inline_max_bytes": 61440},
        "agent": {"mbus": mbus},
        "ironic_cpi_server": {"users": [{"username": "cpi", "role": "write", "password": "w"}],
                              "tls": {"certificate": cert["certificate"],
                                      "private_key": cert["private_key"]}},
    });
    let manifest = json!({
        "name": "bosh",
        "releases": [{"name": "ironic-cpi", "url": format!("file://{}", compiled.display())}],
        "resource_pools": [{
            "name": "vms", "network": "default",
            "stemcell": {"url": format!("file://{}", stemcell_tarball(work).display())},
            "cloud_properties": {"macs": ["52:54:00:ce:00:02"]},
            // As bosh-deployment's bosh.yml: the agent's local blobstore and NTP reach it
            // through env.bosh, which the CPI copies; only agent.mbus is a CPI property.
            "env": {"bosh": {"mbus": {"cert": cert}, "password": "*",
                "ntp": ["0.pool.ntp.org"],
                "blobstores": [{"provider": "local",
                                "options": {"blobstore_path": agent_blobs}}]}},
        }],
        "networks": [{"name": "default", "type": "manual", "subnets": [{
            "range": "10.0.16.0/24", "gateway": "10.0.16.1", "static_ips": ["10.0.16.6"],
            "dns": ["10.0.16.2"]}]}],
        "instance_groups": [{"name": "bosh", "instances": 1, "jobs": [], "resource_pool": "vms",
            "networks": [{"name": "default", "static_ips": ["10.0.16.6"]}]}],
        "cloud_provider": {
            "templates": [{"name": "ironic_cpi", "release": "ironic-cpi"},
                          {"name": "ironic_cpi_server", "release": "ironic-cpi"}],
            "mbus": mbus,
            "cert": {"ca": cert["ca"]},
            "properties": props,
        },
    });
    // JSON is YAML.
    let manifest_path = work.join("bosh.yml");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let state = work.join("state.json");

    let mut create = bosh(home, work);
    create
        .args(["create-env", "--non-interactive"])
        .arg(&manifest_path)
        .arg("--state")
        .arg(&state);
    let mut cli = ChildProcess::spawn(
        "bosh create-env",
        create,
        &work.join("create-env.log"),
        SpawnOptions {
            grace: Duration::from_secs(10),
            remove_dir: None,
        },
    )
    .unwrap();
    let deploying = Instant::now();
    // The VM: the node deployed, with the config drive the CPI built (inline in instance_info).
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(status) = cli.try_wait() {
            panic!(
                "create-env ended ({status}) before the VM was up:\n{}",
                cli.log_tail(60)
            );
        }
        let n = client.get_node(&node).unwrap();
        if n.provision_state.as_deref() == Some("active") && n.instance_uuid.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no VM on {node}:\n{}",
            cli.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    report(&format!(
        "create-env: install and create_vm: {:.1} s",
        deploying.elapsed().as_secs_f64()
    ));
    // The CLI removes the rendered jobs when create-env ends ("Cleaning up rendered CPI
    // jobs"): keep a copy while they are installed.
    let rendered = work.join("cli-rendered");
    copy_installed_jobs(home, &rendered);
    let (_iso, _iso_dir, iso_path) = lab.inline_config_drive(&node);
    let out = Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&iso_path)
        .args(["-x", "/ec2/latest/user-data"])
        .output()
        .unwrap();
    assert!(!out.stdout.is_empty(), "no user data on the drive");
    let agent_dir = work.join("agent-run");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let mut agent = bosh_tools::Agent::start(&agent_dir, &out.stdout).unwrap();
    let status = loop {
        if let Some(status) = cli.try_wait() {
            break status;
        }
        if let Some(status) = agent.process.try_wait() {
            panic!("the agent stopped ({status}):\n{}", agent.errors());
        }
        assert!(
            Instant::now() < deadline,
            "create-env did not finish:\n{}",
            cli.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = std::fs::read_to_string(cli.log_path()).unwrap();
    assert!(status.success(), "create-env failed:\n{log}");
    report(&format!(
        "create-env: total {:.1} s",
        deploying.elapsed().as_secs_f64()
    ));

    compare_renderings(&rendered, &props, tree);
    check_compiled_server(compiled, &rendered, work);

    let deleting = Instant::now();
    run(
        "bosh delete-env",
        bosh(home, work)
            .args(["delete-env", "--non-interactive"])
            .arg(&manifest_path)
            .arg("--state")
            .arg(&state),
    );
    report(&format!(
        "delete-env: {:.1} s",
        deleting.elapsed().as_secs_f64()
    ));
    agent.process.stop();
    assert_eq!(pool_state(&client, "create-env"), before);
    let images = client
        .list_nodes(&NodeQuery::default())
        .unwrap()
        .into_iter()
        .filter(|n| n.instance_uuid.is_some())
        .count();
    assert_eq!(images, 0, "a node is still held");
}

/// The compiled `ironic_cpi_server` (from the compiled release) accepts the config the CLI
/// rendered, with its TLS pair, which it loads.
fn check_compiled_server(compiled: &Path, rendered: &Path, work: &Path) {
    let package = work.join("compiled-ironic_cpi");
    std::fs::create_dir_all(&package).unwrap();
    let tgz = work.join("compiled-ironic_cpi.tgz");
    std::fs::write(
        &tgz,
        tarball_file(compiled, "compiled_packages/ironic_cpi.tgz"),
    )
    .unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&package)
        .status()
        .unwrap();
    assert!(status.success());
    // The rendered config names the files where the job puts them on a VM.
    let config_dir = rendered.join("ironic_cpi_server/config");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(config_dir.join("server.json")).unwrap()).unwrap();
    config["tls"] = json!({"cert_file": config_dir.join("tls.crt"),
                           "key_file": config_dir.join("tls.key")});
    let path = work.join("server.json");
    std::fs::write(&path, config.to_string()).unwrap();
    run(
        "the compiled ironic_cpi_server --check-config on the CLI's rendering",
        Command::new(package.join("bin/ironic_cpi_server"))
            .arg("-c")
            .arg(&path)
            .arg("--check-config"),
    );
}

/// The jobs the CLI installed (`~/.bosh/installations/<id>/jobs/`), copied to `dest`.
fn copy_installed_jobs(home: &Path, dest: &Path) {
    let installations = home.join(".bosh/installations");
    let jobs = std::fs::read_dir(&installations)
        .unwrap()
        .map(|e| e.unwrap().path().join("jobs"))
        .find(|p| p.join("ironic_cpi").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no installed ironic_cpi job under {}",
                installations.display()
            )
        });
    let status = Command::new("cp")
        .arg("-a")
        .arg(&jobs)
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every file the CLI rendered for both jobs (`rendered`, a copy of the installation's jobs)
/// equals render-template.rb's rendering of the same properties.
fn compare_renderings(rendered: &Path, props: &Value, tree: &Path) {
    let ours = TempDir::new().unwrap();
    let mut compared = Vec::new();
    for job in ["ironic_cpi", "ironic_cpi_server"] {
        let out = ours.path().join(job);
        let mut child = Command::new("ruby")
            .arg(tree.join("scripts/release/render-template.rb"))
            .args(["--job", &format!("jobs/{job}"), "-"])
            .arg(&out)
            .current_dir(tree)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(props.to_string().as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "render-template.rb {job}");
        let spec = serde_yaml_value(&std::fs::read(tree.join(format!("jobs/{job}/spec"))).unwrap());
        for target in spec["templates"].as_object().unwrap().values() {
            let target = target.as_str().unwrap();
            let cli = std::fs::read(rendered.join(job).join(target))
                .unwrap_or_else(|e| panic!("the CLI did not render {job}/{target}: {e}"));
            let mine = std::fs::read(out.join(target)).unwrap();
            assert!(
                cli == mine,
                "{job}/{target}: the bosh CLI rendered\n{}\nrender-template.rb rendered\n{}",
                String::from_utf8_lossy(&cli),
                String::from_utf8_lossy(&mine)
            );
            compared.push(format!("{job}/{target}"));
        }
    }
    report(&format!(
        "the CLI's rendering equals render-template.rb's: {compared:?}"
    ));
}
