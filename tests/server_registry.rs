//! The registry API of the companion server, and the CPI's registry client against it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ironic_cpi::config::{AgentCredentials, RegistryConfig, Secret};
use ironic_cpi::registry::RegistryClient;
use ironic_cpi_testkit::server::{raw_http, ServerLab, ServerOpts, READ_USER, WRITE_USER};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

fn lab() -> &'static ServerLab {
    static LAB: OnceLock<ServerLab> = OnceLock::new();
    LAB.get_or_init(|| ServerLab::start(ServerOpts::default()).expect("server starts"))
}

fn settings_url(lab: &ServerLab, id: &str) -> String {
    lab.at(&format!("registry/instances/{id}/settings"))
}

fn with(req: RequestBuilder, user: Option<(&str, &str)>) -> RequestBuilder {
    match user {
        Some((u, p)) => req.basic_auth(u, Some(p)),
        None => req,
    }
}

fn body_json(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let v = r.json().unwrap_or(Value::Null);
    (status, v)
}

#[test]
fn put_get_delete_with_auth() {
    let lab = lab();
    let c = Client::new();
    let url = settings_url(lab, "vm-crud");
    let doc = r#"{"agent_id":"a-1","networks":{"default":{"ip":"10.0.0.5"}}}"#;

    let (s, v) = body_json(
        with(c.put(&url), Some(WRITE_USER))
            .body(doc)
            .send()
            .unwrap(),
    );
    assert_eq!((s, v), (200, json!({"status": "ok"})));

    let (s, v) = body_json(with(c.get(&url), Some(WRITE_USER)).send().unwrap());
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["settings"].as_str(),
        Some(doc),
        "stored verbatim, as a string"
    );
    // Settings hold credentials: a read user is not a VM, and reads none of them.
    let (s, v) = body_json(with(c.get(&url), Some(READ_USER)).send().unwrap());
    assert_eq!((s, v), (403, json!({"status": "access_denied"})));

    let (s, v) = body_json(with(c.delete(&url), Some(WRITE_USER)).send().unwrap());
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    let (s, v) = body_json(with(c.get(&url), Some(WRITE_USER)).send().unwrap());
    assert_eq!((s, v), (404, json!({"status": "not_found"})));
    // Deleting what is not there is fine, as in the Ruby registry.
    let (s, v) = body_json(with(c.delete(&url), Some(WRITE_USER)).send().unwrap());
    assert_eq!((s, v), (200, json!({"status": "ok"})));
}

#[test]
fn refusals_have_the_registry_bodies() {
    let lab = lab();
    let c = Client::new();
    let url = settings_url(lab, "vm-auth");
    with(c.put(&url), Some(WRITE_USER))
        .body("{}")
        .send()
        .unwrap();

    let denied = |r: reqwest::blocking::Response| {
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            r.headers()["www-authenticate"].to_str().unwrap(),
            "Basic realm=\"Bosh Registry\""
        );
        assert_eq!(
            r.json::<Value>().unwrap(),
            json!({"status": "access_denied"})
        );
    };
    denied(c.put(&url).body("{}").send().unwrap());
    denied(c.delete(&url).send().unwrap());
    denied(c.get(&url).send().unwrap());
    denied(
        with(c.put(&url), Some((WRITE_USER.0, "wrong")))
            .body("{}")
            .send()
            .unwrap(),
    );
    denied(with(c.get(&url), Some(("nobody", "x"))).send().unwrap());

    // A reader may not write.
    let r = with(c.put(&url), Some(READ_USER))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"status": "access_denied"})
    );
    let r = with(c.delete(&url), Some(READ_USER)).send().unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Unknown routes, with or without credentials.
    for path in [
        "registry/instances/vm-auth",
        "registry/instances/vm-auth/settings/extra",
        "registry/other",
        "registry",
        "nothing/here",
    ] {
        let (s, v) = body_json(with(c.get(lab.at(path)), Some(READ_USER)).send().unwrap());
        assert_eq!((s, v), (404, json!({"status": "not_found"})), "{path}");
    }
    let r = with(c.post(&url), Some(WRITE_USER)).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Ids that cannot name a file, sent raw so that nothing normalises them.
    for id in ["..", "%2e%2e", "a%2fb", ".hidden", "a%00b"] {
        let req = format!(
            "GET /registry/instances/{id}/settings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let r = raw_http(&lab.url, req.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{id}: {}", r.head);
    }
}

#[test]
fn anonymous_reads_when_configured() {
    let lab = ServerLab::start(ServerOpts {
        extra: json!({"registry": {"anonymous_read": true}}),
        ..Default::default()
    })
    .unwrap();
    let c = Client::new();
    let url = settings_url(&lab, "vm-anon");
    assert_eq!(
        c.put(&url).body("{}").send().unwrap().status().as_u16(),
        401
    );
    with(c.put(&url), Some(WRITE_USER))
        .body(r#"{"x":1}"#)
        .send()
        .unwrap();
    let (s, v) = body_json(c.get(&url).send().unwrap());
    assert_eq!(s, 200);
    assert_eq!(v["settings"], r#"{"x":1}"#);
    // Wrong credentials are still refused, even where none are needed.
    let r = with(c.get(&url), Some((READ_USER.0, "bad")))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn concurrent_puts_never_tear_a_document() {
    // A server of its own: no other test's upload can leave a temp file in its store.
    let lab = &ServerLab::start(ServerOpts::default()).expect("server starts");
    let url = settings_url(lab, "vm-race");
    // Distinct documents, large enough (about 600 KiB) that a torn write would show.
    let docs: Vec<String> = (0..6)
        .map(|i| {
            let pad = char::from(b'a' + i as u8).to_string().repeat(600 * 1024);
            json!({"writer": i, "pad": pad}).to_string()
        })
        .collect();
    let valid: Arc<HashSet<String>> = Arc::new(docs.iter().cloned().collect());
    let client = Client::new();
    with(client.put(&url), Some(WRITE_USER))
        .body(docs[0].clone())
        .send()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (url, valid, stop, c) = (url.clone(), valid.clone(), stop.clone(), client.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = with(c.get(&url), Some(WRITE_USER)).send().unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    let v: Value = r.json().unwrap();
                    let s = v["settings"].as_str().unwrap();
                    assert!(valid.contains(s), "torn document of {} bytes", s.len());
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    let writers: Vec<_> = docs
        .iter()
        .cloned()
        .map(|doc| {
            let (url, c) = (url.clone(), client.clone());
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let r = with(c.put(&url), Some(WRITE_USER))
                        .body(doc.clone())
                        .send()
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    println!("{reads} reads during 90 concurrent PUTs, all complete documents");
    assert!(reads > 0);
    // Every PUT was answered, so every upload was renamed into place or removed.
    let temp_files: Vec<String> = std::fs::read_dir(lab.root.join("registry"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".ironic-cpi-"))
        .collect();
    assert!(temp_files.is_empty(), "temp files left: {temp_files:?}");
}

fn client_cfg(lab: &ServerLab, password: &str) -> RegistryConfig {
    RegistryConfig {
        endpoint: lab.at("registry"),
        agent_endpoint: None,
        username: WRITE_USER.0.into(),
        password: Secret::new(password),
        agent_credentials: AgentCredentials::PerVm,
        ca_cert_file: None,
    }
}

#[test]
fn cpi_registry_client_round_trip() {
    let lab = lab();
    let c = RegistryClient::new(&client_cfg(lab, WRITE_USER.1)).unwrap();
    let settings = json!({"agent_id": "agent-7", "disks": {"persistent": {}}});
    c.put_settings("vm-client", &settings).unwrap();
    assert_eq!(c.get_settings("vm-client").unwrap(), Some(settings.clone()));
    let mut changed = settings.clone();
    changed["disks"]["persistent"]["disk-1"] = json!({"path": "/dev/sdc"});
    c.put_settings("vm-client", &changed).unwrap();
    assert_eq!(c.get_settings("vm-client").unwrap(), Some(changed));
    c.delete_settings("vm-client").unwrap();
    assert_eq!(c.get_settings("vm-client").unwrap(), None);
    c.delete_settings("vm-client").unwrap();
    assert_eq!(c.get_settings("never-there").unwrap(), None);
}

#[test]
fn cpi_registry_client_errors_name_url_and_status_not_password() {
    let lab = lab();
    let c = RegistryClient::new(&client_cfg(lab, "wrong-secret-pw")).unwrap();
    let e = c.put_settings("vm-x", &json!({})).unwrap_err();
    assert!(e.message.contains("401"), "{}", e.message);
    assert!(
        e.message.contains(&settings_url(lab, "vm-x")),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong-secret-pw"), "{}", e.message);

    // A settings document that is not an object is refused by the client.
    Client::new()
        .put(settings_url(lab, "vm-array"))
        .basic_auth(WRITE_USER.0, Some(WRITE_USER.1))
        .body("[1,2]")
        .send()
        .unwrap();
    let good = RegistryClient::new(&client_cfg(lab, WRITE_USER.1)).unwrap();
    let e = good.get_settings("vm-array").unwrap_err();
    assert!(e.message.contains("not a JSON object"), "{}", e.message);

    // Nothing listens: a transport error naming the URL.
    let mut cfg = client_cfg(lab, WRITE_USER.1);
    cfg.endpoint = "http://127.0.0.1:9/registry".into();
    let e = RegistryClient::new(&cfg)
        .unwrap()
        .get_settings("vm-1")
        .unwrap_err();
    assert!(
        e.message
            .contains("http://127.0.0.1:9/registry/instances/vm-1/settings"),
        "{}",
        e.message
    );
}

#[test]
fn documents_edited_through_webdav_are_served_at_once() {
    let opts = ServerOpts {
        extra: json!({"mounts": [
            {"prefix": "/images", "dir": "images"},
            {"prefix": "/registry-files", "dir": "registry"}
        ]}),
        ..Default::default()
    };
    let lab = ServerLab::start(opts).unwrap();
    let c = Client::new();
    let url = settings_url(&lab, "vm-dav");
    let get = || -> Value {
        with(c.get(&url), Some(WRITE_USER))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    with(c.put(&url), Some(WRITE_USER))
        .body(r#"{"v":1}"#)
        .send()
        .unwrap();
    assert_eq!(get()["settings"], r#"{"v":1}"#);
    assert_eq!(get()["settings"], r#"{"v":1}"#); // now from memory
    let r = with(
        c.put(lab.at("registry-files/vm-dav.json")),
        Some(WRITE_USER),
    )
    .body(r#"{"v":2}"#)
    .send()
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(get()["settings"], r#"{"v":2}"#);
    // And on disk behind the server's back: same size and same inode, so only the file times
    // tell. They are set to a moment the cached copy cannot have, whatever the clock's
    // resolution.
    let on_disk = lab.root.join("registry/vm-dav.json");
    let before = std::fs::metadata(&on_disk).unwrap().modified().unwrap();
    std::fs::write(&on_disk, r#"{"v":3}"#).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&on_disk)
        .unwrap()
        .set_modified(before - std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(get()["settings"], r#"{"v":3}"#);
    let r = with(c.get(lab.at("registry-files/vm-dav.json")), Some(READ_USER))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), r#"{"v":3}"#);
}

/// What a registry-era agent sends: `GET <endpoint>/instances/<id>/settings` with the userinfo
/// of its endpoint URL as basic auth (Go's HTTP client does that for URL credentials).
fn agent_get(endpoint: &str, id: &str) -> (u16, Value) {
    let u = url::Url::parse(endpoint).unwrap();
    let mut bare = u.clone();
    bare.set_username("").unwrap();
    bare.set_password(None).unwrap();
    let url = format!(
        "{}/instances/{id}/settings",
        bare.as_str().trim_end_matches('/')
    );
    let mut req = Client::new().get(url);
    if !u.username().is_empty() {
        req = req.basic_auth(u.username(), u.password());
    }
    body_json(req.send().unwrap())
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn each_vm_reads_only_its_own_settings() {
    let lab = lab();
    let c = Client::new();
    let put = |id: &str, doc: &str, digest: Option<&str>| {
        let mut r = with(c.put(settings_url(lab, id)), Some(WRITE_USER)).body(doc.to_string());
        if let Some(d) = digest {
            r = r.header("X-Agent-Password-SHA256", d);
        }
        r.send().unwrap().status().as_u16()
    };
    let get = |id: &str, user: (&str, &str)| {
        body_json(
            with(c.get(settings_url(lab, id)), Some(user))
                .send()
                .unwrap(),
        )
    };
    assert_eq!(
        put("vm-a", r#"{"a":1}"#, Some(&sha256_hex("secret-a"))),
        200
    );
    assert_eq!(
        put("vm-b", r#"{"b":1}"#, Some(&sha256_hex("secret-b"))),
        200
    );

    let (s, v) = get("vm-a", ("vm-a", "secret-a"));
    assert_eq!((s, v["settings"].clone()), (200, json!(r#"{"a":1}"#)));
    for (id, user) in [
        ("vm-a", ("vm-a", "secret-b")), // the wrong secret
        ("vm-a", ("vm-b", "secret-b")), // another VM's credentials
        ("vm-b", ("vm-a", "secret-a")),
        ("vm-a", ("vm-a", "")),
    ] {
        let (s, v) = get(id, user);
        assert_eq!(
            (s, v),
            (401, json!({"status": "access_denied"})),
            "{id} as {user:?}"
        );
    }
    // A VM's credentials write nothing.
    let r = with(c.put(settings_url(lab, "vm-a")), Some(("vm-a", "secret-a")))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The CPI's read-modify-write (no header) keeps the VM's secret; a new one replaces it.
    assert_eq!(put("vm-a", r#"{"a":2}"#, None), 200);
    assert_eq!(
        get("vm-a", ("vm-a", "secret-a")).1["settings"],
        json!(r#"{"a":2}"#)
    );
    assert_eq!(
        put("vm-a", r#"{"a":3}"#, Some(&sha256_hex("secret-a2"))),
        200
    );
    assert_eq!(get("vm-a", ("vm-a", "secret-a")).0, 401);
    assert_eq!(get("vm-a", ("vm-a", "secret-a2")).0, 200);
    for bad in ["abc", &"zz".repeat(32), &sha256_hex("x")[..63]] {
        assert_eq!(put("vm-a", "{}", Some(bad)), 400, "{bad}");
    }
    assert_eq!(
        get("vm-a", ("vm-a", "secret-a2")).1["settings"],
        json!(r#"{"a":3}"#)
    );

    // Deleting the settings deletes the secret: a later VM on the same node needs its own.
    let r = with(c.delete(settings_url(lab, "vm-a")), Some(WRITE_USER))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!lab.root.join("registry/vm-a.agent-sha256").exists());
    assert_eq!(put("vm-a", r#"{"a":4}"#, None), 200);
    assert_eq!(get("vm-a", ("vm-a", "secret-a2")).0, 401);

    // The digest on disk is not the secret.
    let stored = std::fs::read_to_string(lab.root.join("registry/vm-b.agent-sha256")).unwrap();
    assert_eq!(stored, sha256_hex("secret-b"));
}

#[test]
fn the_cpi_gives_each_agent_credentials_that_work_out_of_the_box() {
    // The server's defaults: no anonymous registry reads.
    let lab = lab();
    let cpi = RegistryClient::new(&client_cfg(lab, WRITE_USER.1)).unwrap();
    let settings = json!({"agent_id": "agent-9", "disks": {"persistent": {}}});
    let (one, two) = (cpi.agent_access("vm-one"), cpi.agent_access("vm-two"));
    cpi.put_settings_for("vm-one", &settings, &one).unwrap();
    cpi.put_settings_for("vm-two", &json!({"agent_id": "agent-10"}), &two)
        .unwrap();
    let (s, v) = agent_get(one.endpoint(), "vm-one");
    assert_eq!(s, 200, "{v}");
    let got: Value = serde_json::from_str(v["settings"].as_str().unwrap()).unwrap();
    assert_eq!(got, settings);
    assert_eq!(agent_get(one.endpoint(), "vm-two").0, 401);
    assert_eq!(agent_get(two.endpoint(), "vm-one").0, 401);
    // Without the credentials (an endpoint as a shared config would give): refused.
    assert_eq!(agent_get(&lab.at("registry"), "vm-one").0, 401);
    // attach_disk's read-modify-write keeps the agent's access.
    let mut changed = cpi.get_settings("vm-one").unwrap().unwrap();
    changed["disks"]["persistent"]["disk-1"] = json!({"path": "/dev/sdc"});
    cpi.put_settings("vm-one", &changed).unwrap();
    assert_eq!(agent_get(one.endpoint(), "vm-one").0, 200);
    cpi.delete_settings("vm-one").unwrap();
    cpi.delete_settings("vm-two").unwrap();
    assert_eq!(agent_get(one.endpoint(), "vm-one").0, 401);
}
