//! The CPI's WebDAV client (`repository::Repository`) against the companion server and against
//! nginx's WebDAV (Debian nginx + dav-ext), the two servers it must work with.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::Read;

use ironic_cpi::config::{RepositoryConfig, Secret};
use ironic_cpi::repository::Repository;
use ironic_cpi::{vm_data, ErrorKind};
use ironic_cpi_testkit::nginx::NginxLab;
use ironic_cpi_testkit::server::{self_signed_cert, ServerLab, ServerOpts, READ_USER, WRITE_USER};

fn config(url: String, user: Option<(&str, &str)>) -> RepositoryConfig {
    RepositoryConfig {
        url,
        public_url: None,
        username: user.map(|u| u.0.to_string()),
        password: user.map(|u| Secret::new(u.1)),
        ca_cert_file: None,
        timeout: ironic_cpi::config::Seconds::from_secs(60),
    }
}

/// A reader that yields `len` pseudo-random bytes without holding them.
struct Pattern {
    pos: u64,
    len: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = ((self.len - self.pos) as usize).min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// The same scenario against any server.
fn exercise(repo: &Repository, server: &str) {
    // Nested paths: parents are created with MKCOL as needed.
    repo.put_bytes("st/one/two/image.bin", b"first".to_vec())
        .unwrap_or_else(|e| panic!("{server}: {e}"));
    assert!(repo.exists("st/one/two/image.bin").unwrap(), "{server}");
    assert_eq!(
        repo.get_bytes("st/one/two/image.bin").unwrap().as_deref(),
        Some(&b"first"[..]),
        "{server}"
    );
    // Replace.
    repo.put_bytes("st/one/two/image.bin", b"second".to_vec())
        .unwrap();
    assert_eq!(
        repo.get_bytes("st/one/two/image.bin").unwrap().as_deref(),
        Some(&b"second"[..])
    );

    // Streamed uploads, with and without a known length.
    let len = 5 * 1024 * 1024 + 3;
    for (name, known) in [("sized.img", true), ("chunked.img", false)] {
        let path = format!("st/stream/{name}");
        let reader = Box::new(Pattern { pos: 0, len });
        repo.put_reader(&path, reader, known.then_some(len))
            .unwrap_or_else(|e| panic!("{server} {name}: {e}"));
        let got = repo.get_bytes(&path).unwrap().unwrap();
        assert_eq!(got.len() as u64, len, "{server} {name}");
        assert!(
            got.iter().enumerate().all(|(i, b)| *b == byte_at(i as u64)),
            "{server} {name}: content differs"
        );
    }

    // Upload under a temporary name, then publish with MOVE (into a folder not made yet).
    repo.put_bytes("st/tmp/upload.part", b"published".to_vec())
        .unwrap();
    repo.move_to("st/tmp/upload.part", "st/final/dir/image.bin")
        .unwrap_or_else(|e| panic!("{server} MOVE: {e}"));
    assert!(!repo.exists("st/tmp/upload.part").unwrap());
    assert_eq!(
        repo.get_bytes("st/final/dir/image.bin").unwrap().as_deref(),
        Some(&b"published"[..])
    );
    // MOVE over an existing object replaces it.
    repo.put_bytes("st/tmp/upload2.part", b"newer".to_vec())
        .unwrap();
    repo.move_to("st/tmp/upload2.part", "st/final/dir/image.bin")
        .unwrap();
    assert_eq!(
        repo.get_bytes("st/final/dir/image.bin").unwrap().as_deref(),
        Some(&b"newer"[..])
    );

    // Names that need encoding.
    repo.put_bytes("st/with space/ünï #1.json", b"{}".to_vec())
        .unwrap_or_else(|e| panic!("{server}: {e}"));
    assert!(repo.exists("st/with space/ünï #1.json").unwrap());

    // Absence.
    assert_eq!(repo.get_bytes("st/missing.bin").unwrap(), None, "{server}");
    assert!(!repo.exists("st/missing.bin").unwrap());
    assert!(repo.delete("st/one/two/image.bin").unwrap(), "{server}");
    assert!(!repo.delete("st/one/two/image.bin").unwrap(), "{server}");
    assert!(!repo.exists("st/one/two/image.bin").unwrap());
    let e = repo.move_to("st/missing.bin", "st/x.bin").unwrap_err();
    assert_eq!(e.kind, ErrorKind::CloudError);
    assert!(
        e.message.contains("MOVE") && e.message.contains("404"),
        "{server}: {}",
        e.message
    );

    // Bad paths never reach the server.
    assert_eq!(
        repo.put_bytes("../escape", vec![]).unwrap_err().kind,
        ErrorKind::CpiError
    );
}

#[test]
fn against_the_companion_server() {
    let lab = ServerLab::start(ServerOpts::default()).unwrap();
    let repo = Repository::new(&config(lab.at("images"), Some(WRITE_USER))).unwrap();
    exercise(&repo, "ironic_cpi_server");
    assert_eq!(repo.url("a b"), format!("{}/images/a%20b", lab.url));

    // Credentials in the URL are used, and kept out of URLs and messages.
    let with_userinfo = lab
        .at("images")
        .replace("://", &format!("://{}:{}@", WRITE_USER.0, WRITE_USER.1));
    let repo = Repository::new(&config(with_userinfo, None)).unwrap();
    repo.put_bytes("userinfo/x", b"ok".to_vec()).unwrap();
    assert!(!repo.url("x").contains(WRITE_USER.1));

    // Failures name the URL, the status and what was attempted, never the password.
    let repo = Repository::new(&config(
        lab.at("images"),
        Some((WRITE_USER.0, "not-the-pw-123")),
    ))
    .unwrap();
    let e = repo.put_bytes("denied/x.bin", b"x".to_vec()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CloudError);
    assert!(e.message.contains("401"), "{}", e.message);
    assert!(
        e.message.contains(&lab.at("images/denied/")),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("creating the parent collection"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("not-the-pw-123"), "{}", e.message);
    let e = repo.get_bytes("x.bin").unwrap_err();
    assert!(
        e.message.contains("GET") && e.message.contains("downloading"),
        "{}",
        e.message
    );
}

#[test]
fn against_nginx_webdav() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = NginxLab::start(&dir.path().join("dav")).unwrap();
    // nginx has no auth here; credentials are sent anyway, as in installations that add it.
    let repo = Repository::new(&config(format!("{}/images", nginx.url), Some(("u", "p")))).unwrap();
    exercise(&repo, "nginx");
    assert!(nginx.root.join("images/st/final/dir/image.bin").is_file());
}

#[test]
fn unreachable_server_is_a_cloud_error_naming_the_url() {
    let repo = Repository::new(&config("http://127.0.0.1:9/images".into(), None)).unwrap();
    let e = repo.exists("a.bin").unwrap_err();
    assert_eq!(e.kind, ErrorKind::CloudError);
    assert!(
        e.message.contains("http://127.0.0.1:9/images/a.bin"),
        "{}",
        e.message
    );
    assert!(e.message.contains("cannot connect"), "{}", e.message);
}

#[test]
fn https_with_the_configured_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path()).unwrap();
    let lab = ServerLab::start(ServerOpts {
        extra: serde_json::json!({"tls": {"cert_file": cert, "key_file": key}}),
        ..Default::default()
    })
    .unwrap();
    let mut cfg = config(lab.at("metadata"), Some(WRITE_USER));
    cfg.ca_cert_file = Some(cert.to_string_lossy().to_string());
    let repo = Repository::new(&cfg).unwrap();
    repo.put_bytes("node-1/configdrive.gz", b"drive".to_vec())
        .unwrap();
    assert_eq!(
        repo.get_bytes("node-1/configdrive.gz").unwrap().as_deref(),
        Some(&b"drive"[..])
    );
    assert!(repo.url("x").starts_with("https://"));

    // Without the CA, the server is not trusted: a cloud error naming the URL.
    cfg.ca_cert_file = None;
    let e = Repository::new(&cfg)
        .unwrap()
        .exists("node-1/configdrive.gz")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::CloudError);
    assert!(
        e.message
            .contains(&lab.at("metadata/node-1/configdrive.gz")),
        "{}",
        e.message
    );
}

/// What create_vm does with a config drive Ironic downloads: publish it under an unguessable
/// path, readable by that URL without credentials (Ironic has none) but found by no listing,
/// and removed once the deploy is over.
fn published_drives_are_readable_only_by_their_url(repo: &Repository, server: &str) {
    let files = [("ec2/latest/user-data".to_string(), b"{}".to_vec())];
    let path = vm_data::publish(repo, "node-pub", b"drive".to_vec(), &files)
        .unwrap_or_else(|e| panic!("{server}: {e}"));
    let again = vm_data::publish(repo, "node-pub", b"drive".to_vec(), &[]).unwrap();
    assert_ne!(path, again, "{server}: a new unguessable path each time");
    let token = path.split('/').nth(1).unwrap().to_string();
    assert_eq!(token.len(), 64, "{server}: {path}");

    let anonymous = reqwest::blocking::Client::new();
    let r = anonymous.get(repo.public_url(&path)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{server}: GET by URL");
    assert_eq!(r.text().unwrap(), "drive");
    let propfind = reqwest::Method::from_bytes(b"PROPFIND").unwrap();
    for listing in [
        repo.public_url("node-pub/"),
        format!("{}/", repo.public_url("")),
    ] {
        let r = anonymous.get(&listing).send().unwrap();
        let status = r.status().as_u16();
        assert_ne!(status, 200, "{server}: anonymous GET {listing} lists");
        assert!(!r.text().unwrap().contains(&token), "{server}: {listing}");
        let r = anonymous
            .request(propfind.clone(), &listing)
            .header("Depth", "1")
            .send()
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 401 | 403 | 405),
            "{server}: anonymous PROPFIND {listing}: {}",
            r.status()
        );
        assert!(!r.text().unwrap().contains(&token), "{server}: {listing}");
    }

    assert!(vm_data::unpublish(repo, "node-pub").unwrap(), "{server}");
    let r = anonymous.get(repo.public_url(&path)).send().unwrap();
    assert_eq!(r.status().as_u16(), 404, "{server}: removed");
    assert!(
        !vm_data::unpublish(repo, "node-pub").unwrap(),
        "{server}: nothing left"
    );
}

#[test]
fn published_config_drives_on_the_companion_server() {
    let lab = ServerLab::start(ServerOpts {
        anonymous_read: true,
        ..Default::default()
    })
    .unwrap();
    let repo = Repository::new(&config(lab.at("metadata"), Some(WRITE_USER))).unwrap();
    published_drives_are_readable_only_by_their_url(&repo, "companion server");
    // Read users fetch by URL too, and list nothing either.
    let path = vm_data::publish(&repo, "node-r", b"d".to_vec(), &[]).unwrap();
    let reader = reqwest::blocking::Client::new();
    let r = reader
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            lab.at("metadata/node-r/"),
        )
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .header("Depth", "1")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = reader
        .get(repo.public_url(&path))
        .basic_auth(READ_USER.0, Some(READ_USER.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn published_config_drives_on_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = NginxLab::start_secured(&dir.path().join("dav"), ("cpi", "cpi-pw")).unwrap();
    let repo = Repository::new(&config(
        format!("{}/metadata", nginx.url),
        Some(("cpi", "cpi-pw")),
    ))
    .unwrap();
    published_drives_are_readable_only_by_their_url(&repo, "nginx");
}
