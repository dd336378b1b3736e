//! The Ironic client against the real Ironic 39.0.0 (fake-hardware, SQLite, loopback), plus a
//! tiny scripted HTTP responder for what the real servers cannot do on demand (503 with
//! Retry-After, dropped connections, an Ironic refusing every token, a Keystone answering
//! without one). The real Keystone is in tests/keystone.rs.
//!
//! Isolation: the tests share one lab per kind (`lab()`, `slow_lab()`, `basic_lab()`); each test
//! uses its own node name prefix, resource class and MAC byte, and filters lists by them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ironic_cpi::config::{Config, IronicAuth, IronicConfig, Secret};
use ironic_cpi::error::ErrorKind;
use ironic_cpi::ironic::{ConflictKind, IronicClient, IronicError, NodeQuery, PatchOp, PortQuery};
use ironic_cpi_testkit::ironic::{
    enroll_node, lab_mac, EnrollTarget, IronicLab, IronicLabOptions, LabAuth, NodeSpec,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn lab() -> &'static IronicLab {
    static LAB: OnceLock<IronicLab> = OnceLock::new();
    LAB.get_or_init(|| {
        IronicLab::start(IronicLabOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Power actions hold the node lock for 2 s, so a request right after one meets NodeLocked.
fn slow_lab() -> &'static IronicLab {
    static LAB: OnceLock<IronicLab> = OnceLock::new();
    LAB.get_or_init(|| {
        IronicLab::start(IronicLabOptions {
            power_delay: 2.0,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

const BASIC_USER: &str = "bosh";
const BASIC_PASSWORD: &str = "s3cr3t-Basic-pw";

fn basic_lab() -> &'static IronicLab {
    static LAB: OnceLock<IronicLab> = OnceLock::new();
    LAB.get_or_init(|| {
        IronicLab::start(IronicLabOptions {
            auth: LabAuth::HttpBasic {
                username: BASIC_USER.into(),
                password: BASIC_PASSWORD.into(),
            },
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn client_with(lab: &IronicLab, tweak: impl FnOnce(&mut IronicConfig)) -> IronicClient {
    let mut cfg = lab.config().ironic;
    tweak(&mut cfg);
    IronicClient::new(&cfg).unwrap()
}

/// A node spec in the test's own namespace: name `t-<test>-<i>`, resource class `rc-<test>`.
fn spec(test: &str, mac_byte: u8, i: u16, target: EnrollTarget) -> NodeSpec {
    let mut s = NodeSpec::new(format!("t-{test}-{i}"));
    s.macs = vec![lab_mac(mac_byte, i, 0), lab_mac(mac_byte, i, 1)];
    s.resource_class = Some(format!("rc-{test}"));
    s.target = target;
    s
}

#[test]
fn microversion_is_negotiated_lazily_and_sent() {
    let lab = lab();
    let c = lab.client().unwrap();
    assert_eq!(c.request_count(), 0, "new() must not touch the network");
    assert_eq!(c.microversion().unwrap(), (1, 115));
    assert_eq!(c.request_count(), 1);
    assert_eq!(c.microversion().unwrap(), (1, 115));
    assert_eq!(c.request_count(), 1, "negotiated once, then cached");

    // Node names only appear in lists when the header is honoured (1.1 has none).
    let node = enroll_node(&c, &spec("mv", 0x01, 0, EnrollTarget::Enroll)).unwrap();
    let listed = c
        .list_nodes(&NodeQuery {
            resource_class: Some("rc-mv".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name.as_deref(), Some("t-mv-0"));
    assert_eq!(listed[0].uuid, node.uuid);
    assert_eq!(listed[0].resource_class.as_deref(), Some("rc-mv"));

    let capped = client_with(lab, |c| c.microversion.max = "1.60".into());
    assert_eq!(capped.microversion().unwrap(), (1, 60));

    // Without an explicit negotiation, the first request goes with the configured maximum,
    // and an answer pins it: no `GET /v1` at all.
    let direct = lab.client().unwrap();
    assert_eq!(
        direct.get_node(&node.uuid).unwrap().name.as_deref(),
        Some("t-mv-0")
    );
    assert_eq!(direct.request_count(), 1);
    assert_eq!(direct.microversion().unwrap(), (1, 115));
    assert_eq!(direct.request_count(), 1, "pinned by the answer");

    // A maximum above the server's (an older Ironic): 406, `GET /v1`, the request again.
    let ahead = client_with(lab, |c| c.microversion.max = "1.200".into());
    assert_eq!(ahead.get_node(&node.uuid).unwrap().uuid, node.uuid);
    assert_eq!(ahead.request_count(), 3);
    assert_eq!(ahead.microversion_in_use(), (1, 115));
    ahead.get_node(&node.uuid).unwrap();
    assert_eq!(ahead.request_count(), 4, "negotiated once");

    // A 406 that is not about the version (a field this version lacks) is not negotiated away.
    let old = client_with(lab, |c| c.microversion.max = "1.52".into());
    let e = old
        .list_nodes(&NodeQuery {
            fields: vec!["uuid".into(), "shard".into()],
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, IronicError::NotAcceptable { .. }), "{e:?}");
    assert_eq!(old.request_count(), 2, "the refused list and GET /v1");

    let too_new = client_with(lab, |c| {
        c.microversion.min = "1.116".into();
        c.microversion.max = "1.200".into();
    });
    let e = too_new.get_node(&node.uuid).unwrap_err();
    assert!(matches!(e, IronicError::Microversion { .. }), "{e:?}");
    assert!(e.to_string().contains("1.116"), "{e}");
}

#[test]
fn pagination_returns_every_node_and_port_exactly_once() {
    let lab = lab();
    let setup = lab.client().unwrap();
    let mut want = HashSet::new();
    for i in 0..5 {
        let n = enroll_node(&setup, &spec("page", 0x02, i, EnrollTarget::Enroll)).unwrap();
        want.insert(n.uuid);
        // Decoys between them: Ironic's `next` links drop the filters, and a client that
        // follows them verbatim would list these too.
        enroll_node(&setup, &spec("pagedecoy", 0x12, i, EnrollTarget::Enroll)).unwrap();
    }
    let c = client_with(lab, |c| c.page_size = 2);
    let nodes = c
        .list_nodes(&NodeQuery {
            resource_class: Some("rc-page".into()),
            fields: vec!["uuid".into(), "name".into()],
            ..Default::default()
        })
        .unwrap();
    let got: Vec<String> = nodes.iter().map(|n| n.uuid.clone()).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), want);
    assert!(nodes
        .iter()
        .all(|n| n.name.as_deref().is_some_and(|s| s.starts_with("t-page-"))));
    // Pages of 2, 2 and 1 (a short page has no `next` link); no `GET /v1`.
    assert_eq!(c.request_count(), 3);

    let before = c.request_count();
    let first3 = c
        .list_nodes(&NodeQuery {
            resource_class: Some("rc-page".into()),
            fields: vec!["uuid".into()],
            limit_total: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first3.len(), 3);
    assert_eq!(c.request_count() - before, 2);

    // Ports of one node by node filter, and of one MAC by address (Ironic matches any case).
    let one = nodes[0].uuid.clone();
    let ports = c
        .list_ports(&PortQuery {
            node_uuid: Some(one.clone()),
            fields: vec!["address".into(), "node_uuid".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().all(|p| p.node_uuid == one));
    let mac = ports[0].address.clone();
    let by_mac = c
        .list_ports(&PortQuery {
            address: Some(mac.to_uppercase()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_mac.len(), 1);
    assert_eq!(by_mac[0].node_uuid, one);

    // All ports, two per page, contain our ten exactly once.
    let all = c
        .list_ports(&PortQuery {
            fields: vec!["uuid".into(), "address".into(), "node_uuid".into()],
            ..Default::default()
        })
        .unwrap();
    let ours: Vec<_> = all.iter().filter(|p| want.contains(&p.node_uuid)).collect();
    assert_eq!(ours.len(), 10);
    let uniq: HashSet<_> = all.iter().map(|p| p.uuid.clone()).collect();
    assert_eq!(uniq.len(), all.len(), "a port came back twice");
}

#[test]
fn node_locked_conflict_is_retried_until_the_lock_is_released() {
    let lab = slow_lab();
    let c = lab.client().unwrap();
    let node = enroll_node(&c, &spec("locked", 0x03, 0, EnrollTarget::Enroll)).unwrap();
    // The fake power driver sleeps 2 s while the conductor holds the node's lock. (A PATCH would
    // not do: Ironic waits patiently for the lock on updates; actions answer 409 instead.)
    c.set_power_state(&node.uuid, "power on").unwrap();
    // Without retries, the second action gets the transient 409 ...
    let once = client_with(lab, |c| c.retry.max_attempts = 1);
    let e = once.set_power_state(&node.uuid, "power off").unwrap_err();
    assert_eq!(e.conflict_kind(), Some(ConflictKind::NodeLocked), "{e:?}");
    assert!(e.is_transient());
    // ... and with them, it goes through once the lock is released.
    let before = c.request_count();
    c.set_power_state(&node.uuid, "power off").unwrap();
    let sent = c.request_count() - before;
    assert!(
        sent > 1,
        "the second action should have met 'locked' at least once ({sent} request)"
    );
    let off = c
        .wait_for_power_state(&node.uuid, "power off", WAIT)
        .unwrap();
    assert_eq!(off.power_state.as_deref(), Some("power off"));
}

#[test]
fn associated_conflict_is_final_and_not_retried() {
    let lab = lab();
    let c = lab.client().unwrap();
    let node = enroll_node(&c, &spec("assoc", 0x04, 0, EnrollTarget::Available)).unwrap();
    let mine = "6f1c2f0e-0000-4000-8000-000000000001";
    let theirs = "6f1c2f0e-0000-4000-8000-000000000002";
    c.patch_node(&node.uuid, &[PatchOp::add("/instance_uuid", json!(theirs))])
        .unwrap();
    // The same value again is fine.
    c.patch_node(&node.uuid, &[PatchOp::add("/instance_uuid", json!(theirs))])
        .unwrap();
    let before = c.request_count();
    let e = c
        .patch_node(&node.uuid, &[PatchOp::add("/instance_uuid", json!(mine))])
        .unwrap_err();
    assert_eq!(
        c.request_count() - before,
        1,
        "a final 409 must not be retried"
    );
    assert!(e.is_final_conflict(), "{e:?}");
    assert!(!e.is_transient());
    assert_eq!(e.conflict_kind(), Some(ConflictKind::Associated));
    assert!(e.to_string().contains(theirs), "{e}");
    let cpi: ironic_cpi::CpiError = e.into();
    assert_eq!(cpi.kind, ErrorKind::CloudError);
    assert!(!cpi.ok_to_retry);
}

#[test]
fn not_found_and_bad_request_are_not_retried() {
    let c = lab().client().unwrap();
    c.microversion().unwrap();
    let before = c.request_count();
    let e = c.get_node("no-such-node-anywhere").unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("no-such-node-anywhere"), "{e}");
    let e = c
        .create_node(&json!({"name": "t-bad", "driver": "no-such-driver"}))
        .unwrap_err();
    assert!(matches!(e, IronicError::BadRequest { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-driver"), "{e}");
    assert_eq!(c.request_count() - before, 2);
}

#[test]
fn waits_reach_available_and_active_and_back() {
    let c = lab().client().unwrap();
    // enroll_node waits for manageable and then available.
    let node = enroll_node(&c, &spec("deploy", 0x05, 0, EnrollTarget::Available)).unwrap();
    assert_eq!(node.provision_state.as_deref(), Some("available"));
    assert_eq!(node.power_state.as_deref(), Some("power off"));

    c.patch_node(
        &node.uuid,
        &[PatchOp::add(
            "/instance_info/image_source",
            json!("http://127.0.0.1:1/stemcell.qcow2"),
        )],
    )
    .unwrap();
    let v = c.validate_node(&node.uuid).unwrap();
    assert_eq!(v["power"]["result"], json!(true), "{v}");
    c.set_provision_state(
        &node.uuid,
        "active",
        Some(json!({"configdrive": {"user_data": "hello"}})),
    )
    .unwrap();
    let active = c
        .wait_for_provision_state(&node.uuid, &["active"], WAIT)
        .unwrap();
    assert_eq!(active.provision_state.as_deref(), Some("active"));
    assert!(active.target_provision_state.is_none());

    c.set_power_state(&node.uuid, "rebooting").unwrap();
    let on = c
        .wait_for_power_state(&node.uuid, "rebooting", WAIT)
        .unwrap();
    assert_eq!(on.power_state.as_deref(), Some("power on"));

    c.set_provision_state(&node.uuid, "deleted", None).unwrap();
    let back = c
        .wait_for_provision_state(&node.uuid, &["available"], WAIT)
        .unwrap();
    assert_eq!(back.provision_state.as_deref(), Some("available"));
    c.delete_node(&node.uuid).unwrap();
    assert!(c.get_node(&node.uuid).unwrap_err().is_not_found());
}

#[test]
fn wait_fails_fast_on_a_failed_state() {
    let c = lab().client().unwrap();
    let node = enroll_node(&c, &spec("cleanfail", 0x06, 0, EnrollTarget::Manageable)).unwrap();
    // Manual cleaning with a step the fake deploy interface does not have: Ironic accepts the
    // request and the conductor then fails it into `clean failed`.
    c.set_provision_state(
        &node.uuid,
        "clean",
        Some(json!({"clean_steps": [{"interface": "deploy", "step": "no_such_step"}]})),
    )
    .unwrap();
    let e = c
        .wait_for_provision_state(&node.uuid, &["manageable"], Duration::from_secs(300))
        .unwrap_err();
    let IronicError::WaitFailed {
        node: label,
        state,
        last_error,
        ..
    } = &e
    else {
        panic!("expected WaitFailed, got {e:?}");
    };
    assert!(label.contains("t-cleanfail-0"), "{label}");
    assert!(state.contains("clean failed"), "{state}");
    assert!(
        last_error
            .as_deref()
            .is_some_and(|l| l.contains("no_such_step")),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("t-cleanfail-0") && msg.contains("manageable"),
        "{msg}"
    );
    // Fail fast: a wait that ran into its 300 s deadline would be a WaitTimeout, not this.
}

#[test]
fn wait_fails_fast_when_the_node_enters_maintenance() {
    let c = lab().client().unwrap();
    let node = enroll_node(&c, &spec("maint", 0x07, 0, EnrollTarget::Available)).unwrap();
    let uuid = node.uuid.clone();
    let other = lab().client().unwrap();
    let e = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            other.set_maintenance(&uuid, Some("disk on fire")).unwrap();
        });
        // Nothing moves the node to active: only maintenance can end this wait early.
        c.wait_for_provision_state(&uuid, &["active"], Duration::from_secs(300))
            .unwrap_err()
    });
    assert!(matches!(e, IronicError::WaitFailed { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("t-maint-0") && msg.contains("maintenance"),
        "{msg}"
    );
    assert!(msg.contains("disk on fire"), "{msg}");
    c.set_maintenance(&uuid, None).unwrap();
    assert!(!c.get_node(&uuid).unwrap().maintenance);
}

#[test]
fn wait_timeout_names_node_state_target_and_seconds() {
    let c = lab().client().unwrap();
    let node = enroll_node(&c, &spec("timeout", 0x08, 0, EnrollTarget::Available)).unwrap();
    let e = c
        .wait_for_provision_state(&node.uuid, &["active"], Duration::from_secs(1))
        .unwrap_err();
    let IronicError::WaitTimeout {
        waited_for,
        elapsed,
        ..
    } = &e
    else {
        panic!("expected WaitTimeout, got {e:?}");
    };
    assert_eq!(*waited_for, Duration::from_secs(1));
    assert!(*elapsed >= Duration::from_secs(1));
    let msg = e.to_string();
    for part in [&node.uuid, "t-timeout-0", "available", "active", "1 s"] {
        assert!(msg.contains(part), "'{msg}' lacks '{part}'");
    }
    let cpi: ironic_cpi::CpiError = e.into();
    assert!(
        cpi.ok_to_retry,
        "a timeout may succeed when the director retries"
    );
}

#[test]
fn ports_are_created_and_deleted() {
    let c = lab().client().unwrap();
    let node = enroll_node(&c, &spec("ports", 0x0a, 0, EnrollTarget::Enroll)).unwrap();
    let mac = lab_mac(0x0a, 1, 9);
    let p = c
        .create_port(&node.uuid, &mac, Some(json!({"nic": "eth9"})))
        .unwrap();
    assert_eq!(p.address, mac);
    assert_eq!(p.extra.get("nic"), Some(&json!("eth9")));
    let dup = c.create_port(&node.uuid, &mac, None).unwrap_err();
    assert_eq!(dup.conflict_kind(), Some(ConflictKind::Other), "{dup:?}");
    c.delete_port(&p.uuid).unwrap();
    let left = c
        .list_ports(&PortQuery {
            address: Some(mac),
            ..Default::default()
        })
        .unwrap();
    assert!(left.is_empty());
}

#[test]
fn http_basic_auth_accepts_the_right_password_only() {
    let lab = basic_lab();
    let good = lab.client().unwrap();
    let node = enroll_node(&good, &spec("basic", 0x0b, 0, EnrollTarget::Enroll)).unwrap();
    assert_eq!(good.get_node("t-basic-0").unwrap().uuid, node.uuid);

    let wrong = "wr0ng-Password-xyz";
    let bad = client_with(lab, |c| {
        c.auth = IronicAuth::HttpBasic {
            username: BASIC_USER.into(),
            password: Secret::new(wrong),
        }
    });
    let e = bad.get_node(&node.uuid).unwrap_err();
    assert!(matches!(e, IronicError::Unauthorized { .. }), "{e:?}");
    assert_eq!(bad.request_count(), 1, "the node GET is refused once");
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(
            !shown.contains(wrong) && !shown.contains(BASIC_PASSWORD),
            "{shown}"
        );
    }
    let none = client_with(lab, |c| c.auth = IronicAuth::None);
    assert!(matches!(
        none.list_nodes(&NodeQuery::default()).unwrap_err(),
        IronicError::Unauthorized { .. }
    ));
}

#[test]
fn waits_ride_out_an_ironic_restart() {
    let mut own = IronicLab::start(IronicLabOptions::default()).unwrap();
    let c = own.client().unwrap();
    let node = enroll_node(&c, &spec("restart", 0x0c, 0, EnrollTarget::Manageable)).unwrap();
    let uuid = node.uuid.clone();
    let cfg = own.config().ironic;
    let e = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let w = IronicClient::new(&cfg).unwrap();
            let r = w.wait_for_provision_state(&uuid, &["available"], Duration::from_secs(120));
            (r, w.request_count())
        });
        std::thread::sleep(Duration::from_millis(500));
        let down = own.restart().unwrap();
        eprintln!("ironic was down for {:.1} s", down.as_secs_f64());
        c.set_provision_state(&uuid, "provide", None).unwrap();
        waiter.join().unwrap()
    });
    let (result, requests) = e;
    let node = result.unwrap_or_else(|e| panic!("the wait did not survive the restart: {e}"));
    assert_eq!(node.provision_state.as_deref(), Some("available"));
    assert!(requests > 3, "{requests}");
}

// ---- faults the real server cannot produce on demand: a scripted responder ----

struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    Http(u16, Vec<(&'static str, String)>, String),
    Drop,
}

/// Serves each connection with `script(request number, request)`, one request per connection.
fn responder(
    script: impl Fn(usize, &Seen, &str) -> Reply + Send + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let base = url.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = vec![];
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            // Read the body so that the client sees an answer, not a reset.
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let req = Seen {
                line: line.trim().to_string(),
                headers,
            };
            let reply = script(n, &req, &base);
            log.lock().unwrap().push(req);
            match reply {
                Reply::Drop => drop(stream),
                Reply::Http(status, extra, body) => {
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in extra {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    let _ = stream.write_all(format!("{head}\r\n{body}").as_bytes());
                }
            }
        }
    });
    (url, seen)
}

/// Ironic's answer to a request whose microversion is above the fake's 1.80 (it checks the
/// version before anything else), or `script`'s, numbered among the requests that get there.
fn like_ironic(
    script: impl Fn(usize, &Seen) -> Reply + Send + 'static,
) -> impl Fn(usize, &Seen, &str) -> Reply + Send + 'static {
    let answered = std::sync::atomic::AtomicUsize::new(0);
    move |_, req, _| {
        if req.line.starts_with("GET /v1 ") {
            return versions();
        }
        let asked = req
            .header("X-OpenStack-Ironic-API-Version")
            .and_then(ironic_cpi::config::parse_microversion);
        if asked.is_some_and(|v| v > (1, 80)) {
            return Reply::Http(
                406,
                vec![
                    ("X-OpenStack-Ironic-API-Minimum-Version", "1.1".into()),
                    ("X-OpenStack-Ironic-API-Maximum-Version", "1.80".into()),
                ],
                r#"{"error_message": "{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": \"Version 1.115 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.80].\"}"}"#.into(),
            );
        }
        script(
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            req,
        )
    }
}

fn versions() -> Reply {
    Reply::Http(
        200,
        vec![],
        json!({"id": "v1", "version": {"id": "v1", "min_version": "1.1", "version": "1.80"}})
            .to_string(),
    )
}

fn node_json(name: &str) -> String {
    json!({"uuid": "11111111-2222-3333-4444-555555555555", "name": name,
           "provision_state": "available"})
    .to_string()
}

fn fake_config(url: &str) -> IronicConfig {
    let mut cfg = Config::from_value(json!({"ironic": {"url": url}}))
        .unwrap()
        .ironic;
    cfg.retry.initial_delay = ironic_cpi::config::Seconds::from_millis(10);
    cfg.retry.max_delay = ironic_cpi::config::Seconds::from_millis(50);
    cfg
}

#[test]
fn fake_503_and_retry_after_are_retried_with_the_version_header() {
    let (url, seen) = responder(like_ironic(|n, _| match n {
        0 | 1 => Reply::Http(
            503,
            vec![("Retry-After", "0".into())],
            r#"{"error_message": "{\"faultstring\": \"No conductor\"}"}"#.into(),
        ),
        _ => Reply::Http(200, vec![], node_json("n1")),
    }));
    let c = IronicClient::new(&fake_config(&url)).unwrap();
    let node = c.get_node("n1").unwrap();
    assert_eq!(node.name.as_deref(), Some("n1"));
    // 1.115 refused (406), GET /v1, then 503, 503, 200 with the negotiated 1.80.
    assert_eq!(c.request_count(), 5);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].header("X-OpenStack-Ironic-API-Version"),
        Some("1.115")
    );
    assert!(seen[1].line.starts_with("GET /v1 "));
    assert!(seen[1].header("X-OpenStack-Ironic-API-Version").is_none());
    for req in &seen[2..] {
        assert_eq!(req.header("X-OpenStack-Ironic-API-Version"), Some("1.80"));
        assert!(req
            .header("User-Agent")
            .is_some_and(|u| u.starts_with("ironic_cpi/")));
    }
}

#[test]
fn fake_503_gives_up_after_max_attempts() {
    let (url, _) = responder(like_ironic(|_, _| Reply::Http(503, vec![], "busy".into())));
    let mut cfg = fake_config(&url);
    cfg.retry.max_attempts = 3;
    let c = IronicClient::new(&cfg).unwrap();
    let e = c.get_node("n1").unwrap_err();
    assert!(matches!(e, IronicError::ServiceUnavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("busy"));
    assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
    assert_eq!(c.request_count(), 2 + 3, "406, GET /v1, three attempts");
}

#[test]
fn fake_dropped_connection_retries_get_but_not_post() {
    let (url, seen) = responder(like_ironic(|n, req| match (n, req.line.as_str()) {
        (0, _) => Reply::Drop,
        (_, l) if l.starts_with("POST") => Reply::Drop,
        _ => Reply::Http(200, vec![], node_json("n2")),
    }));
    let c = IronicClient::new(&fake_config(&url)).unwrap();
    assert_eq!(c.get_node("n2").unwrap().name.as_deref(), Some("n2"));
    // 406, GET /v1, the dropped GET and its retry.
    assert_eq!(c.request_count(), 4);
    let e = c.create_node(&json!({"name": "x"})).unwrap_err();
    assert!(matches!(e, IronicError::Transport { .. }), "{e:?}");
    assert_eq!(
        c.request_count(),
        5,
        "a POST that may have arrived is not repeated"
    );
    let posts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.line.starts_with("POST"))
        .count();
    assert_eq!(posts, 1);
}

#[test]
fn connection_refused_names_the_url_without_credentials() {
    let port = ironic_cpi_testkit::process::free_port().unwrap();
    let mut cfg = fake_config(&format!("http://admin:pw-in-url@127.0.0.1:{port}"));
    cfg.retry.max_attempts = 2;
    let c = IronicClient::new(&cfg).unwrap();
    let e = c.get_node("x").unwrap_err();
    assert!(
        matches!(e, IronicError::Transport { not_sent: true, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        !msg.contains("pw-in-url") && !format!("{e:?}").contains("pw-in-url"),
        "{msg}"
    );
    assert_eq!(c.request_count(), 2);
}

// Keystone: tests/keystone.rs runs the real Keystone and Ironic (password, application
// credential, catalog, revoked and expired tokens, wrong credentials). Left here is what they
// cannot be made to do on demand: an Ironic that refuses even a fresh token, and a Keystone that
// answers without one.

/// Keystone issues `tok-1`, `tok-2`, ...; Ironic answers `GET /v1` and refuses everything else
/// with `refusal` (401: token not accepted; 403: policy).
fn refusing_ironic(refusal: u16) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let issued = Arc::new(AtomicUsize::new(0));
    let count = issued.clone();
    let (url, _) = responder(move |_, req, base| {
        if req.line.starts_with("POST /v3/auth/tokens") {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let catalog = json!({"token": {"catalog": [{"type": "baremetal", "endpoints": [
                {"interface": "public", "url": base}]}]}});
            return Reply::Http(
                201,
                vec![("X-Subject-Token", format!("tok-{n}"))],
                catalog.to_string(),
            );
        }
        if req.line.starts_with("GET /v1 ") {
            return versions();
        }
        Reply::Http(refusal, vec![], "{}".into())
    });
    (url, issued)
}

fn keystone_config(url: &str) -> IronicConfig {
    let mut cfg = fake_config(url);
    cfg.url = String::new();
    cfg.auth = IronicAuth::KeystoneApplicationCredential {
        auth_url: url.to_string(),
        application_credential_id: "ac-id".into(),
        application_credential_secret: Secret::new("ac-secret"),
        region_name: None,
    };
    cfg
}

#[test]
fn fake_a_token_refused_again_after_renewal_is_final() {
    use std::sync::atomic::Ordering;
    let (url, issued) = refusing_ironic(401);
    let c = IronicClient::new(&keystone_config(&url)).unwrap();
    let e = c.get_node("n4").unwrap_err();
    assert!(
        matches!(e, IronicError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2, "renewed once, not again");
    // token, refused GET, token again, refused GET (Ironic checks the token first)
    assert_eq!(c.request_count(), 4);
}

#[test]
fn fake_a_policy_refusal_is_not_renewed() {
    use std::sync::atomic::Ordering;
    let (url, issued) = refusing_ironic(403);
    let c = IronicClient::new(&keystone_config(&url)).unwrap();
    let e = c.get_node("n4").unwrap_err();
    assert!(
        matches!(e, IronicError::Unauthorized { status: 403, .. }),
        "{e:?}"
    );
    assert!(e.needs_configuration());
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "a new token would be refused too"
    );
    assert_eq!(c.request_count(), 2);
}

#[test]
fn fake_keystone_answer_without_a_token_is_an_auth_error() {
    let (url, _) = responder(|_, _, _| Reply::Http(201, vec![], r#"{"token": {}}"#.into()));
    let c = IronicClient::new(&keystone_config(&url)).unwrap();
    let e = c.get_node("n5").unwrap_err();
    assert!(matches!(e, IronicError::Auth { .. }), "{e:?}");
    assert!(e.to_string().contains("X-Subject-Token"), "{e}");
    assert_eq!(c.request_count(), 1);
}
