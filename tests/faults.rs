//! Faults around create_vm and create_stemcell, with the real Ironic and the real companion
//! server: Ironic stopped mid-deploy (SIGSTOP), transient and persistent 503 / 409 NodeLocked
//! and dropped connections (through `ironic_cpi_testkit::faultproxy` in front of the real Ironic), a deploy that
//! fails, and the companion server killed during a stemcell upload.
//!
//! Each test enrolls nodes of its own resource class and checks that the pool is exactly as it
//! was once the fault is over; each proxy test has its own proxy and CPI config.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ironic_cpi::ironic::IronicClient;
use ironic_cpi_testkit::cpi::{create_vm_args, make_stemcell_image, node_of, CallOutcome, CpiLab};
use ironic_cpi_testkit::faultproxy::{Fault, FaultProxy};
use ironic_cpi_testkit::files::files_under;
use ironic_cpi_testkit::ironic::{enroll_pool, pool_state, IronicLabOptions};
use ironic_cpi_testkit::process::signal_group;
use ironic_cpi_testkit::server::{ServerLab, ServerOpts};

struct Shared {
    lab: CpiLab,
    stemcell: String,
}

fn start_lab(ironic: IronicLabOptions) -> (CpiLab, String) {
    let lab = common::start_lab(ironic, false, false);
    let stemcell = lab.upload_stemcell(None, 64 * 1024);
    (lab, stemcell)
}

fn shared() -> &'static Shared {
    static LAB: OnceLock<Shared> = OnceLock::new();
    LAB.get_or_init(|| {
        let (lab, stemcell) = start_lab(IronicLabOptions::default());
        Shared { lab, stemcell }
    })
}

/// The lab's config with Ironic reached through `proxy`, retrying up to `attempts` times, fast.
fn through_proxy(lab: &CpiLab, dir: &Path, proxy: &FaultProxy, attempts: u32) -> PathBuf {
    lab.config_variant(dir, "cpi.json", |c| {
        c["ironic"]["url"] = json!(proxy.url);
        c["ironic"]["retry"] =
            json!({"max_attempts": attempts, "initial_delay": 0.05, "max_delay": 0.2});
    })
}

/// One proxy test's setup: its nodes, the pool as it was, a proxy in front of the shared lab's
/// Ironic, and a CPI config that goes through it.
struct Proxied {
    client: IronicClient,
    nodes: Vec<String>,
    before: Vec<Value>,
    proxy: FaultProxy,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn proxied(rc: &str, byte: u8, attempts: u32) -> Proxied {
    let s = shared();
    let client = s.lab.client().unwrap();
    let nodes = enroll_pool(&client, rc, byte, 1);
    let before = pool_state(&client, rc);
    let proxy = FaultProxy::start(&s.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = through_proxy(&s.lab, dir.path(), &proxy, attempts);
    Proxied {
        client,
        nodes,
        before,
        proxy,
        config,
        _dir: dir,
    }
}

/// create_vm on the nodes of `rc`, with the CPI config `config`.
fn create_vm_with(config: &Path, rc: &str) -> CallOutcome {
    let s = shared();
    s.lab.call_with_config(
        config,
        "create_vm",
        create_vm_args(&s.stemcell, rc),
        2,
        Some(3),
    )
}

/// A well-formed cid of a VM that never existed on `node`.
fn unknown_vm(node: &str) -> String {
    format!("{node}:{}", uuid::Uuid::now_v7())
}

#[test]
fn transient_503_409_and_dropped_reads_are_retried_within_bounds() {
    let s = shared();
    let client = s.lab.client().unwrap();
    let rc = "f-transient";
    let nodes = enroll_pool(&client, rc, 0x51, 1);
    let node = &nodes[0];
    let before = pool_state(&client, rc);

    let proxy = FaultProxy::start(&s.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = through_proxy(&s.lab, dir.path(), &proxy, 6);
    // A create_vm without faults first: how many PATCHes it makes to the node.
    let clean = create_vm_with(&config, rc);
    let clean_patches = proxy.count("PATCH", node);
    s.lab
        .call_with_config(&config, "delete_vm", json!([clean.vm_cid()]), 2, Some(3))
        .ok();
    proxy.forget_seen();
    // Each fault below is one the client must ride out (5 attempts after the first).
    proxy.inject(
        Some("GET"),
        "/v1/nodes?",
        Fault::Unavailable { retry_after: None },
        2,
    );
    proxy.inject(Some("GET"), "/v1/ports", Fault::Drop, 2);
    proxy.inject(Some("PATCH"), node, Fault::NodeLocked, 3);
    proxy.inject(
        Some("PUT"),
        &format!("{node}/states/provision"),
        Fault::Unavailable {
            retry_after: Some("1"),
        },
        1,
    );
    proxy.inject(
        Some("GET"),
        &format!("/v1/nodes/{node}"),
        Fault::NodeLocked,
        2,
    );
    let out = create_vm_with(&config, rc);
    let vm = out.vm_cid();
    assert_eq!(node_of(&vm), node);
    assert_eq!(proxy.injected(), 10, "every injected fault was met");
    // Bounds: each faulted request was repeated exactly as often as it failed, plus once.
    let patches = proxy.count("PATCH", node);
    assert_eq!(
        patches,
        clean_patches + 3,
        "the PATCHes of a create_vm ({clean_patches} without faults) and 3 NodeLocked answers"
    );
    assert_eq!(
        proxy.count("PUT", &format!("{node}/states/provision")),
        2,
        "deploy request: one 503 and one success"
    );
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/v1/ports"))
            .count()
            >= 3
    );

    let out = s
        .lab
        .call_with_config(&config, "delete_vm", json!([vm]), 2, Some(3));
    out.ok();
    assert_eq!(pool_state(&client, rc), before);
}

#[test]
fn persistent_503_ends_in_a_typed_error_within_the_retry_budget() {
    let s = shared();
    let rc = "f-persistent";
    let attempts = 4;
    let Proxied {
        client,
        nodes,
        before,
        proxy,
        config,
        _dir: _config_dir,
    } = proxied(rc, 0x52, attempts);

    // Every request: the first one (API version negotiation) exhausts the budget.
    proxy.inject(None, "/", Fault::Unavailable { retry_after: None }, 1000);
    let started = Instant::now();
    let out = s.lab.call_with_config(
        &config,
        "has_vm",
        json!([unknown_vm(&nodes[0])]),
        2,
        Some(3),
    );
    let elapsed = started.elapsed();
    let message = out.assert_error("Bosh::Clouds::CloudError");
    assert!(message.contains("503"), "{message}");
    assert_eq!(proxy.seen().len(), attempts as usize, "{:?}", proxy.seen());
    // The attempt count proves the budget; the time is reported, not asserted.
    eprintln!("persistent 503: typed error after {attempts} attempts in {elapsed:?}");

    // Only the claim fails: the node stays free and the caller may try again.
    proxy.clear_faults();
    proxy.forget_seen();
    proxy.inject(
        Some("PATCH"),
        &nodes[0],
        Fault::Unavailable { retry_after: None },
        1000,
    );
    let out = create_vm_with(&config, rc);
    out.assert_retryable_creation_failure();
    assert_eq!(proxy.count("PATCH", &nodes[0]), attempts as usize);
    proxy.clear_faults();
    assert_eq!(pool_state(&client, rc), before);
}

/// A node that stays locked through every retry of the claim (a conductor busy with another
/// consumer's deploy or cleaning holds the lock for as long as that runs) is passed over for the
/// next candidate, instead of failing the whole create_vm.
#[test]
fn a_node_that_stays_locked_is_passed_over() {
    let s = shared();
    let client = s.lab.client().unwrap();
    let rc = "f-locked";
    let nodes = enroll_pool(&client, rc, 0x56, 2);
    let before = pool_state(&client, rc);
    let proxy = FaultProxy::start(&s.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attempts = 3;
    let config = through_proxy(&s.lab, dir.path(), &proxy, attempts);
    // Exactly one claim's worth of NodeLocked answers: whichever node is tried first stays
    // locked through all its attempts, the other one is free.
    proxy.inject(
        Some("PATCH"),
        "/v1/nodes/",
        Fault::NodeLocked,
        attempts as usize,
    );
    let out = create_vm_with(&config, rc);
    let vm = out.vm_cid();
    assert_eq!(proxy.injected(), attempts as usize);
    let passed_over: Vec<&String> = nodes.iter().filter(|n| *n != node_of(&vm)).collect();
    assert_eq!(passed_over.len(), 1, "{vm} is not one of {nodes:?}");
    assert_eq!(
        proxy.count("PATCH", passed_over[0]),
        attempts as usize,
        "the locked node: every attempt, then no more"
    );
    assert!(out.stderr.contains("stayed locked"), "{}", out.stderr);

    let out = s
        .lab
        .call_with_config(&config, "delete_vm", json!([vm]), 2, Some(3));
    out.ok();
    assert_eq!(pool_state(&client, rc), before);
}

#[test]
fn a_failed_deploy_is_rolled_back() {
    let rc = "f-deployfail";
    let Proxied {
        client,
        nodes,
        before,
        proxy,
        config,
        _dir: _config_dir,
    } = proxied(rc, 0x53, 6);
    // The first read of the node after the deploy started reports `deploy failed`.
    proxy.inject(
        Some("GET"),
        &format!("/v1/nodes/{}", nodes[0]),
        Fault::FailDeploy,
        1,
    );
    let out = create_vm_with(&config, rc);
    let message = out.assert_retryable_creation_failure();
    assert!(message.contains("deploy failed"), "{message}");
    assert!(
        message.contains("injected by the fault proxy"),
        "last_error: {message}"
    );
    assert_eq!(proxy.injected(), 1);
    assert_eq!(pool_state(&client, rc), before);
}

/// Ironic stopped (SIGSTOP on its whole process group) while create_vm waits for the deploy:
/// the CPI rides it out, or answers a typed error and leaves nothing reserved.
#[test]
fn ironic_stopped_during_the_deploy_wait() {
    let (lab, stemcell) = start_lab(IronicLabOptions {
        deploy_delay: 3.0,
        ..Default::default()
    });
    let client = lab.client().unwrap();
    let rc = "f-sigstop";
    let nodes = enroll_pool(&client, rc, 0x54, 1);
    let before = pool_state(&client, rc);
    let dir = tempfile::tempdir().unwrap();
    // Short request timeouts so the stop is felt as timeouts, not as one long request.
    let config = lab.config_variant(dir.path(), "cpi.json", |c| {
        c["ironic"]["request_timeout"] = json!(2.0);
        c["ironic"]["timeouts"]["deploy"] = json!(90.0);
    });

    // Stopped as soon as the deploy starts (usually while the deploy request is in flight),
    // then well into the wait for `active`.
    for delay_ms in [0, 800] {
        stop_during_deploy(&lab, &client, &config, &stemcell, rc, &nodes[0], delay_ms);
        assert_eq!(
            pool_state(&client, rc),
            before,
            "stopped after {delay_ms} ms"
        );
    }
}

fn stop_during_deploy(
    lab: &CpiLab,
    client: &IronicClient,
    config: &Path,
    stemcell: &str,
    rc: &str,
    node: &str,
    delay_ms: u64,
) {
    let pid = lab.ironic.pid();
    let out = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            lab.call_with_config(
                config,
                "create_vm",
                create_vm_args(stemcell, rc),
                2,
                Some(3),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = client.get_node(node).unwrap();
            if matches!(n.state(), "deploying" | "wait call-back") {
                break;
            }
            assert!(Instant::now() < deadline, "the deploy never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        assert!(signal_group(pid as libc::pid_t, libc::SIGSTOP));
        std::thread::sleep(Duration::from_secs(8));
        assert!(signal_group(pid as libc::pid_t, libc::SIGCONT));
        call.join().unwrap()
    });
    eprintln!(
        "create_vm with Ironic stopped {delay_ms} ms into the deploy, for 8 s: {}",
        out.stdout
    );
    if out.response["error"].is_null() {
        let vm = out.vm_cid();
        assert_eq!(node_of(&vm), node);
        let n = client.get_node(node).unwrap();
        assert_eq!(n.provision_state.as_deref(), Some("active"));
        lab.call_with_config(config, "delete_vm", json!([vm]), 2, Some(3))
            .ok();
    } else {
        out.assert_retryable_creation_failure();
    }
}

/// The companion server SIGKILLed while create_stemcell streams a large image into it: the CPI
/// answers a typed error, and after a restart on the same storage no partial object is visible.
#[test]
fn server_killed_during_a_stemcell_upload() {
    let s = shared();
    let storage = tempfile::tempdir().unwrap();
    let root = storage.path().join("root");
    let server_opts = || ServerOpts {
        root: Some(root.clone()),
        anonymous_read: true,
        binary: Some(ironic_cpi_testkit::binaries::server().unwrap()),
        ..Default::default()
    };
    let mut server = ServerLab::start(server_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = s.lab.config_variant(dir.path(), "cpi.json", |c| {
        c["stemcell_repository"]["url"] = json!(format!("{}/images", server.url));
    });
    let image = make_stemcell_image(dir.path(), 96 * 1024 * 1024, true).unwrap();

    let out = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            s.lab.call_with_config(
                &config,
                "create_stemcell",
                json!([image.to_str().unwrap(), {"name": "big", "version": "1", "disk_format": "qcow2"}]),
                2,
                None,
            )
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let uploading = files_under(&root).iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".ironic-cpi-"))
                    && p.metadata().map(|m| m.len() > 1024 * 1024).unwrap_or(false)
            });
            if uploading {
                break;
            }
            assert!(!call.is_finished(), "the upload ended before the kill");
            assert!(Instant::now() < deadline, "no upload in progress seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        server.signal("KILL").unwrap();
        server.wait_exit(Duration::from_secs(10)).unwrap();
        call.join().unwrap()
    });
    assert!(
        matches!(
            out.error_type(),
            Some("Bosh::Clouds::CloudError") | Some("Bosh::Clouds::CpiError")
        ),
        "{}",
        out.stdout
    );
    let message = out.response["error"]["message"].as_str().unwrap();
    assert!(message.contains("images"), "names what failed: {message}");
    drop(server);

    let server = ServerLab::start(server_opts()).unwrap();
    let leftovers: Vec<_> = files_under(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".ironic-cpi-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    // Whatever directory the upload created holds no visible image or metadata.
    let http = reqwest::blocking::Client::new();
    for d in std::fs::read_dir(root.join("images")).unwrap().flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        for f in ["root.img", "stemcell.json"] {
            let url = server.at(&format!("images/{name}/{f}"));
            let status = http.get(&url).send().unwrap().status();
            assert_eq!(status, 404, "{url} is visible after the crash");
        }
    }
}

/// A server's `Retry-After` is capped by the retry policy, whatever it says: a huge or odd value
/// must neither crash the CPI nor make it sleep for ages.
#[test]
fn absurd_retry_after_values_are_capped() {
    let s = shared();
    let client = s.lab.client().unwrap();
    let nodes = enroll_pool(&client, "f-retryafter", 0x55, 1);
    let proxy = FaultProxy::start(&s.lab.ironic.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = through_proxy(&s.lab, dir.path(), &proxy, 6);
    for value in [
        "1e300",
        "18446744073709551616",
        "-5",
        "soon",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        proxy.inject(
            Some("GET"),
            &format!("/v1/nodes/{}", nodes[0]),
            Fault::Unavailable {
                retry_after: Some(value),
            },
            1,
        );
        let out = s.lab.call_with_config(
            &config,
            "has_vm",
            json!([unknown_vm(&nodes[0])]),
            2,
            Some(3),
        );
        assert_eq!(out.ok(), &json!(false), "Retry-After: {value}");
        // The wait the CPI chose, as it logs it: never above max(retry.max_delay, 1 s).
        let waits = retry_waits(&out.stderr);
        assert_eq!(
            waits.len(),
            1,
            "Retry-After: {value}: one retry\n{}",
            out.stderr
        );
        assert!(
            waits[0] <= 1.0,
            "Retry-After: {value}: waited {} s\n{}",
            waits[0],
            out.stderr
        );
        eprintln!("Retry-After: {value}: retried after {:.2} s", waits[0]);
    }
    assert_eq!(proxy.injected(), 5);
}

/// The delays of the CPI's "retrying in X s" log lines, in seconds.
fn retry_waits(stderr: &str) -> Vec<f64> {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("retrying in ")?
                .1
                .split_once(" s")?
                .0
                .parse()
                .ok()
        })
        .collect()
}
