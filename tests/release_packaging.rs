//! The release's packages compiled the way a BOSH agent compiles them on a stemcell, without
//! network: the blobs come from scripts/release/prepare-blobs (cached in .cache/release/blobs),
//! scripts/release/compile-package stages each package's `files` into a fresh
//! BOSH_COMPILE_TARGET and runs its `packaging` in a wiped environment (and a network namespace
//! of its own when allowed). The compiled CPI then answers `info` through the rendered job's
//! bin/cpi, and the compiled server accepts a rendered config.
//!
//! This compiles the whole project in release mode once (both binaries in one cargo run); it
//! prints how long each step took.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use tempfile::TempDir;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Straight to stderr, past the test harness's capture, so that the figures always show.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "release_packaging: {line}");
}

fn run(what: &str, cmd: &mut Command) {
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
}

fn render_job(job: &str, props: &Value, out: &Path) {
    let mut child = Command::new("ruby")
        .arg(repo().join("scripts/release/render-template.rb"))
        .args(["--job", &format!("jobs/{job}"), "-"])
        .arg(out)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .spawn()
        .expect("ruby");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(props.to_string().as_bytes())
        .expect("properties");
    assert!(child.wait().expect("renderer").success(), "rendering {job}");
}

#[test]
fn packages_compile_offline_and_the_programs_run() {
    let total = Instant::now();
    let cache = repo().join(".cache/release");
    let blobs = cache.join("blobs");
    std::fs::create_dir_all(&cache).expect(".cache/release");
    run(
        "prepare-blobs (cached toolchain and vendor tarballs are reused)",
        Command::new(repo().join("scripts/release/prepare-blobs"))
            .arg("--output")
            .arg(&blobs),
    );

    // Under .cache/: a release build tree is large, and /tmp may be a small tmpfs.
    let work = TempDir::new_in(&cache).expect("work dir");
    let packages = work.path().join("packages");
    let compile = work.path().join("compile");
    for package in ["rust", "ironic_cpi"] {
        run(
            &format!("compile package {package}"),
            Command::new(repo().join("scripts/release/compile-package"))
                .arg(package)
                .arg(&blobs)
                .arg(&packages)
                .arg(&compile),
        );
    }
    for binary in ["ironic_cpi", "ironic_cpi_server"] {
        let path = packages.join("ironic_cpi/bin").join(binary);
        assert!(path.is_file(), "{} is missing", path.display());
    }

    // The compiled CPI behind the rendered bin/cpi, as `bosh create-env` runs it.
    let jobs = work.path().join("jobs");
    render_job(
        "ironic_cpi",
        &json!({"ironic": {"url": "http://127.0.0.1:6385"}}),
        &jobs.join("ironic_cpi"),
    );
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut child = Command::new(jobs.join("ironic_cpi/bin/cpi"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", &home)
        .env("BOSH_JOBS_DIR", &jobs)
        .env("BOSH_PACKAGES_DIR", &packages)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bin/cpi");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"method":"info","arguments":[],"context":{"director_uuid":"d"}}"#)
        .expect("request");
    let out = child.wait_with_output().expect("bin/cpi finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("one JSON response");
    assert_eq!(answer["error"], Value::Null, "{answer}");
    assert_eq!(answer["result"]["api_version"], json!(2), "{answer}");

    // The compiled server accepts its rendered config.
    render_job(
        "ironic_cpi_server",
        &json!({"ironic_cpi_server": {"users": [{"username": "cpi", "role": "write", "password": "w"}]}}),
        &jobs.join("ironic_cpi_server"),
    );
    run(
        "compiled ironic_cpi_server --check-config",
        Command::new(packages.join("ironic_cpi/bin/ironic_cpi_server"))
            .arg("-c")
            .arg(jobs.join("ironic_cpi_server/config/server.json"))
            .arg("--check-config"),
    );
    report(&format!(
        "total (blobs, both packages, checks): {:.1} s",
        total.elapsed().as_secs_f64()
    ));
}

fn compile_package_error(package: &str, blobs: &Path, work: &Path) -> String {
    let out = Command::new(repo().join("scripts/release/compile-package"))
        .arg(package)
        .arg(blobs)
        .arg(work.join("packages"))
        .arg(work.join("compile"))
        .output()
        .expect("compile-package runs");
    assert!(!out.status.success(), "compile-package {package} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_or_ambiguous_blobs_are_reported() {
    let work = TempDir::new().expect("tempdir");
    let blobs = work.path().join("blobs");
    std::fs::create_dir_all(blobs.join("rust")).expect("blobs");

    let e = compile_package_error("rust", &blobs, work.path());
    assert!(e.contains("prepare-blobs"), "{e}");

    // Two toolchains: the rust package refuses to guess.
    for version in ["1.94.0", "1.95.0"] {
        let name = format!("rust/rust-{version}-x86_64-unknown-linux-gnu.tar.gz");
        std::fs::write(blobs.join(name), b"").expect("blob");
    }
    let e = compile_package_error("rust", &blobs, work.path());
    assert!(e.contains("exactly one"), "{e}");

    // ironic_cpi needs its dependency compiled first.
    let e = compile_package_error("ironic_cpi", &blobs, work.path());
    assert!(e.contains("dependency rust"), "{e}");
}
