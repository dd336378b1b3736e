//! The companion server's WebDAV side: path safety, auth, ranges, large streamed uploads, crash
//! and shutdown behaviour, TLS, limits and configuration checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ironic_cpi_testkit::server::{
    raw_http, self_signed_cert, ServerLab, ServerOpts, READ_USER, WRITE_USER,
};
use reqwest::blocking::{Body, Client};
use serde_json::json;

fn lab() -> &'static ServerLab {
    static LAB: OnceLock<ServerLab> = OnceLock::new();
    LAB.get_or_init(|| ServerLab::start(ServerOpts::default()).expect("server starts"))
}

fn auth_header((u, p): (&str, &str)) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    format!("Authorization: Basic {token}\r\n")
}

fn raw(lab: &ServerLab, method: &str, target: &str, extra: &str) -> (u16, String) {
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}{extra}Content-Length: 0\r\nConnection: close\r\n\r\n",
        auth_header(WRITE_USER)
    );
    let r = raw_http(&lab.url, req.as_bytes()).unwrap();
    (r.status, String::from_utf8_lossy(&r.body).to_string())
}

fn put(lab: &ServerLab, path: &str, data: Vec<u8>) -> u16 {
    Client::new()
        .put(lab.at(path))
        .basic_auth(WRITE_USER.0, Some(WRITE_USER.1))
        .body(data)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn health_check() {
    let r = Client::new().get(lab().at("healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), r#"{"status":"ok"}"#);
}

#[test]
fn traversal_attempts_are_refused() {
    let lab = lab();
    // Something worth stealing, next to the storage root, and links pointing at it.
    let outside = lab.root.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"TOPSECRET").unwrap();
    let images = lab.root.join("images");
    std::fs::create_dir_all(images.join("links")).unwrap();
    let _ = std::os::unix::fs::symlink(outside.join("secret.txt"), images.join("links/out.txt"));
    let _ = std::os::unix::fs::symlink(&outside, images.join("links/outdir"));
    std::fs::write(lab.root.join("registry/victim.json"), b"{}").unwrap();

    let cases = [
        ("GET", "/images/../registry/victim.json", 400),
        ("GET", "/images/%2e%2e/%2e%2e/outside/secret.txt", 400),
        ("GET", "/images/%2E%2E/registry/victim.json", 400),
        ("GET", "/images/..%2f..%2foutside%2fsecret.txt", 400),
        ("GET", "/images/%2foutside%2fsecret.txt", 400),
        (
            "GET",
            "/images/links%2f..%2f..%2f..%2foutside/secret.txt",
            400,
        ),
        ("GET", "/images/..\\..\\outside\\secret.txt", 400),
        ("GET", "/images/%5c..%5coutside", 400),
        ("PUT", "/images/../../outside/new.txt", 400),
        ("DELETE", "/images/%2e%2e/registry/victim.json", 400),
        ("PROPFIND", "/images/../", 400),
        // Absolute forms: the path is taken as a path below "/", which is not a mount.
        ("GET", "//outside/secret.txt", 404),
        ("GET", "http://127.0.0.1/etc/passwd", 404),
        // Symbolic links out of the mount.
        ("GET", "/images/links/out.txt", 403),
        ("GET", "/images/links/outdir/secret.txt", 403),
        ("HEAD", "/images/links/out.txt", 403),
        ("PUT", "/images/links/outdir/planted.txt", 403),
        ("MKCOL", "/images/links/outdir/newdir/", 403),
        ("DELETE", "/images/links/outdir/secret.txt", 403),
        // The server's own temp names are not reachable.
        ("GET", "/images/.ironic-cpi-upload.1.0.tmp", 404),
    ];
    for (method, target, want) in cases {
        let (status, body) = raw(lab, method, target, "");
        assert_eq!(status, want, "{method} {target}: {body}");
        assert!(!body.contains("TOPSECRET"), "{method} {target} leaked");
    }
    assert!(!outside.join("new.txt").exists());
    assert!(!outside.join("planted.txt").exists());
    assert!(!outside.join("newdir").exists());
    assert!(outside.join("secret.txt").exists());
    assert!(lab.root.join("registry/victim.json").exists());

    // COPY and MOVE destinations get the same checks, and stay inside the mount.
    assert_eq!(put(lab, "images/src.txt", b"x".to_vec()), 201);
    for (dest, want) in [
        ("/images/../outside/x.txt", &[400][..]),
        ("/images/%2e%2e/%2e%2e/outside/x.txt", &[400]),
        ("http://127.0.0.1/images/..%2f..%2foutside%2fx.txt", &[400]),
        ("/metadata/x.txt", &[403]),
        ("/registry/instances/x/settings", &[403]),
        // dav-server checks the destination's parent first: the refused lookup makes it 409.
        ("/images/links/outdir/x.txt", &[403, 409]),
    ] {
        for method in ["COPY", "MOVE"] {
            let (status, body) = raw(
                lab,
                method,
                "/images/src.txt",
                &format!("Destination: {dest}\r\n"),
            );
            assert!(
                want.contains(&status),
                "{method} to {dest}: {status} {body}"
            );
        }
    }
    assert!(!outside.join("x.txt").exists());

    // Listings leave out links pointing out of the tree.
    let (status, body) = raw(lab, "PROPFIND", "/images/links/", "Depth: 1\r\n");
    assert_eq!(status, 207);
    assert!(
        !body.contains("out.txt") && !body.contains("outdir"),
        "{body}"
    );
}

#[test]
fn webdav_auth_roles() {
    let lab = lab();
    let c = Client::new();
    let url = lab.at("images/auth/file.bin");
    let r = c.put(&url).body("x").send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    let r = c
        .put(&url)
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(put(lab, "images/auth/file.bin", b"data".to_vec()), 201);
    assert_eq!(c.get(&url).send().unwrap().status().as_u16(), 401);
    let r = c
        .get(&url)
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "data");
    let r = c
        .delete(&url)
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The access log names users, never passwords or the Authorization header.
    // Access lines are written in batches, within 50 ms.
    let line = format!(" {} \"GET /images/auth/file.bin\" 200 4 ", READ_USER.0);
    wait_for("the access log line", || lab.log().contains(&line));
    let log = lab.log();
    assert!(!log.contains(WRITE_USER.1) && !log.contains(READ_USER.1));
    assert!(!log.to_ascii_lowercase().contains("authorization"));
    assert!(!log.contains(
        auth_header(READ_USER)
            .trim_start_matches("Authorization: Basic ")
            .trim()
    ));
}

#[test]
fn anonymous_read_mount() {
    let lab = ServerLab::start(ServerOpts {
        anonymous_read: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(put(&lab, "images/pub.img", b"public".to_vec()), 201);
    let c = Client::new();
    let r = c.get(lab.at("images/pub.img")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "public");
    assert_eq!(
        c.put(lab.at("images/x"))
            .body("x")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        c.delete(lab.at("images/pub.img"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );

    // Anonymous clients and readers fetch what they can name; only writers list collections,
    // so that an unguessable path (a published config drive) stays unguessable.
    let propfind = reqwest::Method::from_bytes(b"PROPFIND").unwrap();
    let list = |method: reqwest::Method, path: &str, user: Option<(&str, &str)>| {
        let mut r = c.request(method, lab.at(path)).header("Depth", "1");
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        r.send().unwrap().status().as_u16()
    };
    for path in ["images/", "images", "metadata/"] {
        assert_eq!(
            list(propfind.clone(), path, None),
            401,
            "anonymous PROPFIND {path}"
        );
        assert_eq!(
            list(propfind.clone(), path, Some(READ_USER)),
            403,
            "reader PROPFIND {path}"
        );
        assert_eq!(
            list(reqwest::Method::GET, path, None),
            403,
            "anonymous GET {path}"
        );
        assert_eq!(
            list(reqwest::Method::GET, path, Some(READ_USER)),
            403,
            "reader GET {path}"
        );
        assert_eq!(
            list(propfind.clone(), path, Some(WRITE_USER)),
            207,
            "writer PROPFIND {path}"
        );
        assert_eq!(
            list(reqwest::Method::GET, path, Some(WRITE_USER)),
            200,
            "writer GET {path}"
        );
    }
}

#[test]
fn range_gets_give_206() {
    let lab = lab();
    let c = Client::new();
    // One small (served from memory) and one large (streamed from disk) file.
    for (name, size) in [
        ("small.bin", 1000usize),
        ("large.bin", 3 * 1024 * 1024 + 17),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let path = format!("images/range/{name}");
        assert_eq!(put(lab, &path, data.clone()), 201);
        let get = |range: &str| {
            c.get(lab.at(&path))
                .basic_auth(READ_USER.0, Some(READ_USER.1))
                .header("Range", range)
                .send()
                .unwrap()
        };
        let r = get("bytes=10-19");
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes 10-19/{size}")
        );
        assert_eq!(r.bytes().unwrap().as_ref(), &data[10..20]);
        let r = get("bytes=-5");
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.bytes().unwrap().as_ref(), &data[size - 5..]);
        let r = get(&format!("bytes={}-", size - 100));
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.bytes().unwrap().len(), 100);
        let r = get(&format!("bytes={size}-"));
        assert_eq!(r.status().as_u16(), 416);
        // Several ranges: multipart, by dav-server.
        let r = get("bytes=0-1,5-6");
        assert_eq!(r.status().as_u16(), 206);
        let r = c
            .get(lab.at(&path))
            .basic_auth(READ_USER.0, Some(READ_USER.1))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), &data[..]);
    }
}

#[test]
fn put_with_content_range_is_refused_and_limits_apply() {
    let lab = ServerLab::start(ServerOpts {
        extra: json!({"max_body_bytes": 4096}),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(put(&lab, "images/ok.bin", vec![1; 4096]), 201);
    assert_eq!(put(&lab, "images/big.bin", vec![1; 4097]), 413);
    // Chunked, so the size is only known as it arrives.
    let r = Client::new()
        .put(lab.at("images/chunked.bin"))
        .basic_auth(WRITE_USER.0, Some(WRITE_USER.1))
        .body(Body::new(std::io::Cursor::new(vec![1u8; 100_000])))
        .send();
    if let Ok(r) = r {
        assert!(!r.status().is_success(), "{}", r.status());
    }
    assert!(!lab.root.join("images/chunked.bin").exists());
    let (status, _) = raw(
        &lab,
        "PUT",
        "/images/ok.bin",
        "Content-Range: bytes 0-0/4096\r\n",
    );
    assert_eq!(status, 501);
    assert_eq!(
        std::fs::read(lab.root.join("images/ok.bin")).unwrap(),
        vec![1; 4096]
    );
}

#[test]
fn one_gib_put_and_get_stream_in_flat_memory() {
    let lab = ServerLab::start(ServerOpts::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse.img");
    let size: u64 = 1 << 30;
    std::fs::File::create(&src).unwrap().set_len(size).unwrap();
    let client = Client::builder().timeout(None).build().unwrap();
    let start = Instant::now();
    let r = client
        .put(lab.at("images/big/1gib.img"))
        .basic_auth(WRITE_USER.0, Some(WRITE_USER.1))
        .body(Body::sized(std::fs::File::open(&src).unwrap(), size))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let put_secs = start.elapsed().as_secs_f64();
    assert_eq!(
        std::fs::metadata(lab.root.join("images/big/1gib.img"))
            .unwrap()
            .len(),
        size
    );
    let start = Instant::now();
    let mut r = client
        .get(lab.at("images/big/1gib.img"))
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == 0));
        total += n as u64;
    }
    assert_eq!(total, size);
    let get_secs = start.elapsed().as_secs_f64();
    let peak = lab.peak_rss_kib().unwrap();
    println!(
        "1 GiB PUT {put_secs:.1}s ({:.0} MiB/s), GET {get_secs:.1}s ({:.0} MiB/s), server peak RSS (VmHWM) {} KiB (debug build)",
        1024.0 / put_secs,
        1024.0 / get_secs,
        peak
    );
    assert!(peak < 64 * 1024, "server peak RSS {peak} KiB");
}

/// Send the head and `sent` bytes of a PUT of `total` bytes, and leave it hanging.
fn start_upload(lab: &ServerLab, path: &str, total: usize, sent: usize) -> TcpStream {
    let addr = lab.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\n{}Content-Length: {total}\r\nConnection: close\r\n\r\n",
        auth_header(WRITE_USER)
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![7u8; sent]).unwrap();
    s.flush().unwrap();
    s
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(".ironic-cpi-"))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_during_upload_leaves_no_partial_object() {
    let root = tempfile::tempdir().unwrap();
    let opts = || ServerOpts {
        root: Some(root.path().join("store")),
        ..Default::default()
    };
    let mut lab = ServerLab::start(opts()).unwrap();
    assert_eq!(put(&lab, "images/k/obj.bin", b"old version".to_vec()), 201);
    let dir = lab.root.join("images/k");
    let _conn = start_upload(&lab, "/images/k/obj.bin", 64 << 20, 8 << 20);
    wait_for("the upload's temp file", || !temp_files(&dir).is_empty());
    // The object stays the old one while the upload runs, and listings do not show the temp file.
    let r = Client::new()
        .get(lab.at("images/k/obj.bin"))
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "old version");
    let (status, listing) = raw(&lab, "PROPFIND", "/images/k/", "Depth: 1\r\n");
    assert_eq!(status, 207);
    assert!(!listing.contains(".ironic-cpi-"), "{listing}");

    lab.signal("KILL").unwrap();
    assert!(lab.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(std::fs::read(dir.join("obj.bin")).unwrap(), b"old version");
    assert_eq!(
        temp_files(&dir).len(),
        1,
        "the killed upload's temp file is left on disk"
    );
    drop(lab);

    let lab = ServerLab::start(opts()).unwrap();
    assert!(temp_files(&dir).is_empty(), "cleaned at startup");
    assert!(lab.log().contains("removed 1 unfinished upload"));
    let r = Client::new()
        .get(lab.at("images/k/obj.bin"))
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "old version");

    // A fresh object killed mid-upload never appears at all.
    let mut lab = lab;
    let _conn = start_upload(&lab, "/images/k/new.bin", 64 << 20, 4 << 20);
    wait_for("the upload's temp file", || !temp_files(&dir).is_empty());
    lab.signal("KILL").unwrap();
    lab.wait_exit(Duration::from_secs(10));
    drop(lab);
    let lab = ServerLab::start(opts()).unwrap();
    let (status, _) = raw(&lab, "GET", "/images/k/new.bin", "");
    assert_eq!(status, 404);
    assert!(temp_files(&dir).is_empty());
}

#[test]
fn sigterm_finishes_uploads_in_flight_then_exits() {
    let mut lab = ServerLab::start(ServerOpts::default()).unwrap();
    let total = 4 << 20;
    let mut conn = start_upload(&lab, "/images/t/inflight.bin", total, total / 2);
    wait_for("the upload's temp file", || {
        !temp_files(&lab.root.join("images/t")).is_empty()
    });
    lab.signal("TERM").unwrap();
    let addr = lab.url.trim_start_matches("http://").to_string();
    wait_for("the listener to close", || {
        TcpStream::connect(&addr).is_err()
    });
    conn.write_all(&vec![7u8; total - total / 2]).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = lab
        .wait_exit(Duration::from_secs(20))
        .expect("server exits");
    assert!(status.success(), "{status}");
    let data = std::fs::read(lab.root.join("images/t/inflight.bin")).unwrap();
    assert_eq!(data.len(), total);
    assert!(lab.log().contains("shutdown complete"), "{}", lab.log());
}

#[test]
fn tls_serves_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path()).unwrap();
    let lab = ServerLab::start(ServerOpts {
        extra: json!({"tls": {"cert_file": cert, "key_file": key}}),
        ..Default::default()
    })
    .unwrap();
    assert!(lab.url.starts_with("https://"), "{}", lab.url);
    let pem = std::fs::read(&cert).unwrap();
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let r = client.get(lab.at("healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .put(lab.at("images/tls.txt"))
        .basic_auth(WRITE_USER.0, Some(WRITE_USER.1))
        .body("over tls")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Without the CA the client refuses the server.
    assert!(Client::new().get(lab.at("healthz")).send().is_err());
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let bin = ironic_cpi_testkit::binaries::server().unwrap();
    let run = |config: serde_json::Value| {
        let p = dir.path().join("c.json");
        std::fs::write(&p, config.to_string()).unwrap();
        Command::new(&bin)
            .arg("-c")
            .arg(&p)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let good = run(json!({"root": dir.path().join("r")}));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = run(
        json!({"root": "/x", "users": [{"username": "u", "role": "read", "password_bcrypt": "notahash-s3cr3t"}]}),
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("users[0].password_bcrypt"), "{err}");
    assert!(!err.contains("notahash-s3cr3t"), "{err}");
    // The TLS files are loaded, not only looked for.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let bad = run(json!({"root": "/x", "tls": {"cert_file": junk, "key_file": junk}}));
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("tls.cert_file"), "{err}");
    let bad =
        run(json!({"root": "/x", "mounts": [{"prefix": "/a", "dir": "a", "anonymous": true}]}));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("mounts[0]") && err.contains("anonymous"),
        "{err}"
    );
}

#[test]
fn bcrypt_users_authenticate() {
    let hash = bcrypt::hash("hashed-pw", 4).unwrap();
    let lab = ServerLab::start(ServerOpts {
        extra: json!({"users": [{"username": "ops", "role": "write", "password_bcrypt": hash}]}),
        ..Default::default()
    })
    .unwrap();
    let c = Client::new();
    let r = c
        .put(lab.at("registry/instances/vm-b/settings"))
        .basic_auth("ops", Some("hashed-pw"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(lab.at("registry/instances/vm-b/settings"))
        .basic_auth("ops", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
