//! The BOSH release's job templates, rendered with Ruby ERB the way the director renders them
//! (scripts/release/render-template.rb: `p`, `if_p`, `spec`, defaults from the job spec) and
//! checked by the programs themselves: every rendered cpi.json and server.json must pass the
//! binary's `--check-config`, and the rendered `bin/cpi` is run for real.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ironic_cpi::config::Config;
use ironic_cpi::vm_type::VmCloudProperties;
use ironic_cpi_server::ServerConfig;
use ironic_cpi_testkit::process::repo_root;
use serde_json::{json, Value};
use tempfile::TempDir;

const CPI: &str = env!("CARGO_BIN_EXE_ironic_cpi");
/// What the director leaves in the environment of a CPI process (external_cpi.rb).
const DIRECTOR_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run the renderer with `props` (the job's manifest properties) on stdin.
fn ruby_render(args: &[&str], props: &Value) -> Result<String, String> {
    ruby_render_traced(args, props, None)
}

/// `ruby_render`, appending the names of the properties the templates ask for to `trace`.
fn ruby_render_traced(
    args: &[&str],
    props: &Value,
    trace: Option<&Path>,
) -> Result<String, String> {
    let mut cmd = Command::new("ruby");
    if let Some(trace) = trace {
        cmd.env("RENDER_TRACE", trace);
    }
    let mut child = cmd
        .arg(repo_root().join("scripts/release/render-template.rb"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ruby runs (scripts/setup installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(props.to_string().as_bytes())
        .expect("write properties");
    let out = child.wait_with_output().expect("renderer finishes");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("rendered text is UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One template of `job`, or the renderer's error.
fn render(job: &str, template: &str, props: &Value) -> Result<String, String> {
    let dir = format!("jobs/{job}");
    ruby_render(&[&dir, template, "-"], props)
}

/// Every template of `job` into `<root>/jobs/<job>`, the layout of /var/vcap/jobs.
fn render_job(job: &str, props: &Value, root: &Path) -> PathBuf {
    let out = root.join("jobs").join(job);
    let dir = format!("jobs/{job}");
    ruby_render(
        &["--job", &dir, "-", out.to_str().expect("utf-8 path")],
        props,
    )
    .unwrap_or_else(|e| panic!("rendering {job} with {props}: {e}"));
    out
}

fn server_binary() -> std::path::PathBuf {
    ironic_cpi_testkit::binaries::server().unwrap_or_else(|e| panic!("{e}"))
}

fn check_config(binary: &Path, path: &Path) -> Result<(), String> {
    let out = Command::new(binary)
        .arg("-c")
        .arg(path)
        .arg("--check-config")
        .output()
        .expect("binary runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

/// The job rendered into a fresh tree; cpi.json must pass `ironic_cpi --check-config`.
fn cpi_job(props: &Value) -> (TempDir, PathBuf, Value) {
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi", props, root.path());
    let config = job.join("config/cpi.json");
    check_config(Path::new(CPI), &config).unwrap_or_else(|e| panic!("cpi.json for {props}: {e}"));
    let text = std::fs::read_to_string(&config).expect("cpi.json");
    let value = serde_json::from_str(&text).expect("cpi.json is JSON");
    (root, job, value)
}

fn minimal() -> Value {
    json!({"ironic": {"url": "http://127.0.0.1:6385"}})
}

fn with(mut base: Value, patch: Value) -> Value {
    ironic_cpi::config::overlay(&mut base, patch.as_object().expect("object patch"));
    base
}

/// The parsed config with its defaults filled in, as the CPI sees it.
fn effective(value: &Value) -> Value {
    let config = Config::from_value(value.clone()).expect("valid config");
    serde_json::to_value(config).expect("config serialises")
}

#[test]
fn defaults_only_render_the_cpis_own_defaults() {
    let (_root, job, value) = cpi_job(&minimal());
    // The spec's defaults are the CPI's defaults: nothing changes meaning on the way through.
    assert_eq!(effective(&value), effective(&minimal()));
    assert_eq!(value["ironic"]["auth"], json!({"type": "none"}));
    assert!(value["ironic"].get("ca_cert_file").is_none(), "{value}");
    for absent in ["registry", "stemcell_repository", "metadata_repository"] {
        assert!(value.get(absent).is_none(), "{absent} in {value}");
    }
    assert!(value["agent"].get("mbus").is_none() && value["agent"].get("blobstore").is_none());
    let ca = std::fs::read_to_string(job.join("config/cacert.pem")).expect("cacert.pem");
    assert!(ca.is_empty(), "{ca:?}");
    assert!(std::fs::read_to_string(job.join("monit"))
        .expect("monit")
        .trim()
        .is_empty());
}

#[test]
fn every_auth_mode_renders_and_passes_check_config() {
    let keystone = "https://keystone.example.com:5000/v3";
    let cases = [
        (json!({"type": "none"}), json!({"type": "none"})),
        (
            json!({"type": "http_basic", "username": "bosh", "password": "pw"}),
            json!({"type": "http_basic", "username": "bosh", "password": "pw"}),
        ),
        (
            json!({"type": "token", "token": "gAAAA-token"}),
            json!({"type": "token", "token": "gAAAA-token"}),
        ),
        (
            json!({"type": "keystone_password", "auth_url": keystone, "username": "bosh",
                   "password": "pw", "project_name": "baremetal"}),
            json!({"type": "keystone_password", "auth_url": keystone, "username": "bosh",
                   "password": "pw", "project_name": "baremetal", "user_domain_name": "Default",
                   "project_domain_name": "Default"}),
        ),
        (
            json!({"type": "keystone_password", "auth_url": keystone, "username": "bosh",
                   "password": "pw", "project_name": "bm", "user_domain_name": "ops",
                   "project_domain_name": "infra", "region_name": "RegionTwo"}),
            json!({"type": "keystone_password", "auth_url": keystone, "username": "bosh",
                   "password": "pw", "project_name": "bm", "user_domain_name": "ops",
                   "project_domain_name": "infra", "region_name": "RegionTwo"}),
        ),
        (
            json!({"type": "keystone_application_credential", "auth_url": keystone,
                   "application_credential_id": "0a1b", "application_credential_secret": "s3",
                   "region_name": "RegionOne"}),
            json!({"type": "keystone_application_credential", "auth_url": keystone,
                   "application_credential_id": "0a1b", "application_credential_secret": "s3",
                   "region_name": "RegionOne"}),
        ),
    ];
    for (auth, expected) in cases {
        let props = with(minimal(), json!({"ironic": {"auth": auth}}));
        let (_root, _job, value) = cpi_job(&props);
        assert_eq!(value["ironic"]["auth"], expected, "{props}");
    }
}

#[test]
fn missing_or_wrong_properties_fail_rendering_and_name_the_property() {
    let cases = [
        (json!({}), "ironic.url"),
        (
            with(
                minimal(),
                json!({"ironic": {"auth": {"type": "http_basic", "username": "u"}}}),
            ),
            "ironic.auth.password",
        ),
        (
            with(
                minimal(),
                json!({"ironic": {"auth": {"type": "keystone_password",
                "auth_url": "http://k:5000/v3", "username": "u", "password": "p"}}}),
            ),
            "ironic.auth.project_name",
        ),
        (
            with(minimal(), json!({"ironic": {"auth": {"type": "kerberos"}}})),
            "ironic.auth.type",
        ),
        (
            with(
                minimal(),
                json!({"ironic": {"clean_steps": "erase_devices"}}),
            ),
            "ironic.clean_steps",
        ),
        (
            with(
                minimal(),
                json!({"ironic": {"timeouts": {"deploy": "soon"}}}),
            ),
            "ironic.timeouts.deploy",
        ),
        (
            with(
                minimal(),
                json!({"registry": {"endpoint": "http://r:25780/registry"}}),
            ),
            "registry.username",
        ),
        (
            with(minimal(), json!({"blobstore": {"provider": "gcs"}})),
            "blobstore.provider",
        ),
        // What YAML makes of an unquoted `min: 1.60`: the number 1.6.
        (
            with(minimal(), json!({"ironic": {"microversion": {"min": 1.6}}})),
            "ironic.microversion.min",
        ),
        (
            with(minimal(), json!({"ironic": {"microversion": {"max": 1.1}}})),
            "ironic.microversion.max",
        ),
        (
            json!({"ironic": {"auth": {"type": "http_basic", "username": "u", "password": "p"}}}),
            "ironic.url",
        ),
    ];
    for (props, property) in cases {
        let e = render("ironic_cpi", "cpi.json.erb", &props)
            .expect_err(&format!("rendering {props} must fail"));
        assert!(e.contains(property), "{props}: {e}");
    }
}

#[test]
fn microversions_stay_strings_and_check_config_knows_the_floor() {
    let props = with(
        minimal(),
        json!({"ironic": {"microversion": {"min": "1.60", "max": "1.100"}}}),
    );
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(
        value["ironic"]["microversion"],
        json!({"min": "1.60", "max": "1.100"})
    );
    // Quoted but too low, or inverted: the template passes them, --check-config does not.
    for (min, max, key) in [
        ("1.6", "1.115", "ironic.microversion.min"),
        ("1.60", "1.59", "ironic.microversion.max"),
    ] {
        let props = with(
            minimal(),
            json!({"ironic": {"microversion": {"min": min, "max": max}}}),
        );
        let root = TempDir::new().expect("tempdir");
        let job = render_job("ironic_cpi", &props, root.path());
        let e = check_config(Path::new(CPI), &job.join("config/cpi.json"))
            .expect_err(&format!("{min}..{max} must be refused"));
        assert!(e.contains(key), "{min}..{max}: {e}");
    }
}

#[test]
fn keystone_finds_ironic_without_a_url() {
    let props = json!({"ironic": {"auth": {"type": "keystone_application_credential",
        "auth_url": "https://keystone.example.com:5000/v3",
        "application_credential_id": "i", "application_credential_secret": "s"}}});
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(value["ironic"]["url"], json!(""), "{value}");
}

#[test]
fn numeric_credentials_are_refused_without_being_shown() {
    // An unquoted YAML password is a number: refused, named, never echoed.
    for (patch, property) in [
        (
            json!({"ironic": {"auth": {"type": "http_basic", "username": "u", "password": 918273645}}}),
            "ironic.auth.password",
        ),
        (
            json!({"registry": {"endpoint": "http://r:25780/registry", "username": "r",
                                "password": 918273645}}),
            "registry.password",
        ),
        (
            json!({"stemcell_repository": {"url": "http://r:25780/images", "username": "r",
                                           "password": 918273645}}),
            "stemcell_repository.password",
        ),
        (
            json!({"nats": {"address": "10.0.0.6", "user": "nats", "password": 918273645}}),
            "nats.password",
        ),
    ] {
        let props = with(minimal(), patch);
        let e = render("ironic_cpi", "cpi.json.erb", &props)
            .expect_err(&format!("rendering {props} must fail"));
        assert!(e.contains(property) && e.contains("quote"), "{props}: {e}");
        assert!(!e.contains("918273645"), "the value is shown: {e}");
    }
}

#[test]
fn numbers_given_as_strings_become_json_numbers() {
    let props = with(
        minimal(),
        json!({"ironic": {"timeouts": {"deploy": "7200"}, "poll": {"factor": "2.5"}}}),
    );
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(value["ironic"]["timeouts"]["deploy"], json!(7200));
    assert_eq!(value["ironic"]["poll"]["factor"], json!(2.5));
}

#[test]
fn registry_on_and_off() {
    let (_root, _job, off) = cpi_job(&minimal());
    assert!(off.get("registry").is_none(), "{off}");

    let props = with(
        minimal(),
        json!({"registry": {"endpoint": "http://10.0.0.6:25780/registry",
            "agent_endpoint": "http://192.168.0.6:25780/registry",
            "username": "registry", "password": "rpw"}}),
    );
    let (_root, _job, on) = cpi_job(&props);
    assert_eq!(
        on["registry"],
        json!({"endpoint": "http://10.0.0.6:25780/registry",
               "agent_endpoint": "http://192.168.0.6:25780/registry",
               "username": "registry", "password": "rpw", "agent_credentials": "per_vm"})
    );
}

#[test]
fn repositories_mbus_ntp_blobstore_and_node_defaults() {
    let props = with(
        minimal(),
        json!({
            "stemcell_repository": {"url": "http://127.0.0.1:25780/images",
                "public_url": "http://10.0.0.6:25780/images", "username": "cpi", "password": "w"},
            "metadata_repository": {"url": "http://127.0.0.1:25780/metadata", "timeout": 30},
            "ntp": ["0.pool.ntp.org", "1.pool.ntp.org"],
            "nats": {"address": "10.0.0.6", "user": "nats", "password": "p@ss/w%rd"},
            "blobstore": {"provider": "dav", "address": "10.0.0.6", "agent": {"user": "agent",
                "password": "apw"}, "tls": {"cert": {"ca": "-----BEGIN CERTIFICATE-----\nX\n"}}},
            "defaults": {"system_disk": "/dev/nvme0n1", "ephemeral_disk": "/dev/sdb",
                "unused_nic_policy": "dhcp", "public_keys": ["ssh-ed25519 AAAA op"]}
        }),
    );
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(
        value["stemcell_repository"],
        json!({"url": "http://127.0.0.1:25780/images", "public_url": "http://10.0.0.6:25780/images",
               "username": "cpi", "password": "w", "timeout": 300})
    );
    assert_eq!(value["metadata_repository"]["timeout"], json!(30));
    assert_eq!(
        value["agent"]["ntp"],
        json!(["0.pool.ntp.org", "1.pool.ntp.org"])
    );
    // nats.* builds the mbus URL when agent.mbus is unset; the password is percent-encoded.
    let mbus = url::Url::parse(value["agent"]["mbus"].as_str().expect("mbus")).expect("URL");
    assert_eq!(
        (mbus.scheme(), mbus.host_str(), mbus.port()),
        ("nats", Some("10.0.0.6"), Some(4222))
    );
    let password = percent_encoding::percent_decode_str(mbus.password().expect("password"))
        .decode_utf8()
        .expect("utf-8");
    assert_eq!(password, "p@ss/w%rd");
    assert_eq!(
        value["agent"]["blobstore"],
        json!({"provider": "dav", "options": {"endpoint": "https://10.0.0.6:25250", "user": "agent",
               "password": "apw", "tls": {"cert": {"ca": "-----BEGIN CERTIFICATE-----\nX\n"}}}})
    );
    let config = Config::from_value(value.clone()).expect("valid");
    assert_eq!(config.defaults.system_disk, "/dev/nvme0n1");
    assert_eq!(config.defaults.ephemeral_disk.as_deref(), Some("/dev/sdb"));

    // agent.mbus wins over nats.*; create-env's local blobstore.
    let props = with(
        props,
        json!({"agent": {"mbus": "https://mbus:pw@0.0.0.0:6868"},
               "blobstore": {"provider": "local", "path": "/var/vcap/micro_bosh/data/cache"}}),
    );
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(
        value["agent"]["mbus"],
        json!("https://mbus:pw@0.0.0.0:6868")
    );
    assert_eq!(
        value["agent"]["blobstore"],
        json!({"provider": "local", "options": {"blobstore_path": "/var/vcap/micro_bosh/data/cache"}})
    );

    let props = with(
        minimal(),
        json!({"blobstore": {"provider": "s3", "bucket_name": "b", "access_key_id": "k",
               "secret_access_key": "s", "s3_region": "eu-west-1"}}),
    );
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(
        value["agent"]["blobstore"]["options"],
        json!({"bucket_name": "b", "access_key_id": "k", "secret_access_key": "s",
               "region": "eu-west-1"})
    );
}

/// Defect #39 of the original CPI: `%` broke its INI parser and lists rendered with Ruby's `to_s`.
#[test]
fn secrets_with_percent_quotes_and_newlines_survive() {
    let nasty = "p%(x)s%%'\"\\\n\t<%= 1 %>$(id)`id` ünï €";
    let props = with(
        minimal(),
        json!({
            "ironic": {"auth": {"type": "http_basic", "username": "u%", "password": nasty},
                       "clean_steps": [{"interface": "deploy", "step": "erase_devices",
                                        "args": {"note": nasty}}]},
            "stemcell_repository": {"url": "http://127.0.0.1:25780/images", "username": "cpi",
                                    "password": nasty},
            "registry": {"endpoint": "http://127.0.0.1:25780/registry", "username": "r",
                         "password": nasty},
            "agent": {"mbus": format!("nats://u:{}@10.0.0.6:4222", "%25%22")}
        }),
    );
    let (_root, _job, value) = cpi_job(&props);
    assert_eq!(value["ironic"]["auth"]["password"], json!(nasty));
    assert_eq!(value["ironic"]["auth"]["username"], json!("u%"));
    assert_eq!(
        value["ironic"]["clean_steps"][0]["args"]["note"],
        json!(nasty)
    );
    assert_eq!(value["stemcell_repository"]["password"], json!(nasty));
    assert_eq!(value["registry"]["password"], json!(nasty));
    assert_eq!(
        value["agent"]["mbus"],
        json!("nats://u:%25%22@10.0.0.6:4222")
    );

    let server = json!({"ironic_cpi_server": {"users": [
        {"username": "cpi", "role": "write", "password": nasty}]}});
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi_server", &server, root.path());
    check_config(&server_binary(), &job.join("config/server.json")).expect("server.json valid");
    let value: Value = serde_json::from_str(
        &std::fs::read_to_string(job.join("config/server.json")).expect("server.json"),
    )
    .expect("JSON");
    assert_eq!(value["users"][0]["password"], json!(nasty));
}

/// A self-signed certificate and key in PEM, made with Ruby's OpenSSL (no extra tool).
fn self_signed() -> (String, String) {
    let script = r#"
        require 'openssl'
        key = OpenSSL::PKey::RSA.new(2048)
        cert = OpenSSL::X509::Certificate.new
        cert.version = 2
        cert.serial = 1
        cert.subject = cert.issuer = OpenSSL::X509::Name.parse('/CN=127.0.0.1')
        cert.public_key = key.public_key
        cert.not_before = Time.now - 60
        cert.not_after = Time.now + 3600
        ext = OpenSSL::X509::ExtensionFactory.new(cert, cert)
        cert.add_extension(ext.create_extension('basicConstraints', 'CA:TRUE', true))
        cert.add_extension(ext.create_extension('subjectAltName', 'IP:127.0.0.1'))
        cert.sign(key, OpenSSL::Digest.new('SHA256'))
        puts cert.to_pem
        puts key.to_pem
    "#;
    let out = Command::new("ruby")
        .args(["-e", script])
        .output()
        .expect("ruby");
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8(out.stdout).expect("PEM");
    let split = text
        .find("-----BEGIN RSA PRIVATE KEY-----")
        .or_else(|| text.find("-----BEGIN PRIVATE KEY-----"));
    let split = split.expect("a key in the output");
    (text[..split].to_string(), text[split..].to_string())
}

/// A `bin/cpi` call in the environment the director leaves (PATH, TMPDIR, HOME), plus the
/// directories `bosh create-env` sets. The package tree holds the binary under test.
fn run_bin_cpi(root: &Path, job: &Path, request: &Value, bosh_dirs: bool) -> Output {
    let packages = root.join("packages/ironic_cpi/bin");
    std::fs::create_dir_all(&packages).expect("packages dir");
    let binary = packages.join("ironic_cpi");
    if !binary.exists() {
        // A symlink, not a copy: a copy's write descriptor can leak into a child that another test
        // thread forks meanwhile, and exec then fails with ETXTBSY ("Text file busy").
        std::os::unix::fs::symlink(CPI, &binary).expect("link the CPI binary");
    }
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cmd = Command::new(job.join("bin/cpi"));
    cmd.env_clear()
        .env("PATH", DIRECTOR_PATH)
        .env("TMPDIR", std::env::temp_dir())
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if bosh_dirs {
        cmd.env("BOSH_JOBS_DIR", root.join("jobs"))
            .env("BOSH_PACKAGES_DIR", root.join("packages"));
    }
    let mut child = cmd.spawn().expect("bin/cpi starts");
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes());
    // A wrapper that fails before it reads (no config directory) may be gone already.
    if let Err(e) = written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "write request: {e}"
        );
    }
    child.wait_with_output().expect("bin/cpi finishes")
}

fn response(out: &Output) -> Value {
    assert!(out.status.success(), "{}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(out)))
}

fn request(method: &str, arguments: Value) -> Value {
    json!({"method": method, "arguments": arguments, "context": {"director_uuid": "d"},
           "api_version": 2})
}

/// `has_vm` through bin/cpi, which must fail (no Ironic is reachable): the error message.
fn has_vm_error(root: &Path, job: &Path) -> String {
    let out = run_bin_cpi(
        root,
        job,
        &request(
            "has_vm",
            json!(["6f1c2f0e-0000-4000-8000-00000000aaaa:01a22b17-0000-7000-8000-00000000aaaa"]),
        ),
        true,
    );
    let answer = response(&out);
    let message = answer["error"]["message"].as_str();
    message
        .unwrap_or_else(|| panic!("has_vm must fail here: {answer}"))
        .to_string()
}

#[test]
fn bin_cpi_answers_info_with_the_directors_environment() {
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi", &minimal(), root.path());
    let out = run_bin_cpi(root.path(), &job, &request("info", json!([])), true);
    let answer = response(&out);
    assert_eq!(answer["error"], Value::Null, "{answer}");
    assert_eq!(answer["result"]["api_version"], json!(2), "{answer}");

    // Without BOSH_JOBS_DIR the wrapper looks where the director installs jobs.
    let out = run_bin_cpi(root.path(), &job, &request("info", json!([])), false);
    if !Path::new("/var/vcap/jobs/ironic_cpi").exists() {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("/var/vcap/jobs/ironic_cpi/config"), "{err}");
    }
}

#[test]
fn bin_cpi_exports_the_proxies_and_the_cpi_uses_them() {
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let props = with(
        minimal(),
        json!({"ironic": {"url": "http://ironic.invalid:6385", "retry": {"max_attempts": 1}},
               "env": {"http_proxy": proxy_url, "https_proxy": proxy_url,
                       "no_proxy": "localhost,127.0.0.1,$(touch /tmp/never)"}}),
    );
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi", &props, root.path());
    let script = std::fs::read_to_string(job.join("bin/cpi")).expect("bin/cpi");
    for name in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        assert!(
            script.contains(&format!("export {name}=")),
            "{name} in\n{script}"
        );
    }
    assert!(
        !Path::new("/tmp/never").exists(),
        "a property value ran as shell code"
    );

    // The proxy answers 502 to what it receives; the request line shows the CPI went through it.
    let seen = std::thread::spawn(move || {
        let (mut conn, _) = proxy.accept().expect("the CPI connects to the proxy");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).expect("request head");
        let _ = conn.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    has_vm_error(root.path(), &job);
    let head = seen.join().expect("proxy thread");
    assert!(
        head.starts_with("GET http://ironic.invalid:6385/"),
        "{head}"
    );
}

#[test]
fn ca_files_are_written_and_referenced_only_when_given() {
    let (cert, _key) = self_signed();
    let props = with(
        minimal(),
        json!({"ironic": {"url": "https://127.0.0.1:9", "ca_cert": cert,
                          "retry": {"max_attempts": 1}},
               "registry": {"endpoint": "https://127.0.0.1:9/registry", "username": "r",
                            "password": "p", "ca_cert": cert}}),
    );
    let (root, job, value) = cpi_job(&props);
    assert_eq!(value["ironic"]["ca_cert_file"], json!("cacert.pem"));
    assert_eq!(value["registry"]["ca_cert_file"], json!("registry_ca.pem"));
    assert_eq!(
        std::fs::read_to_string(job.join("config/cacert.pem"))
            .expect("cacert.pem")
            .trim(),
        cert.trim()
    );
    assert_eq!(
        std::fs::read_to_string(job.join("config/registry_ca.pem"))
            .expect("registry_ca")
            .trim(),
        cert.trim()
    );
    assert!(value.get("stemcell_repository").is_none());

    // The CPI finds the file through bin/cpi (relative to the config directory): the call gets
    // as far as connecting (nothing listens on port 9).
    let message = has_vm_error(root.path(), &job);
    assert!(!message.contains("ca_cert_file"), "{message}");

    // Control: a CA file that is not PEM is reported, so the file above was really read.
    std::fs::write(job.join("config/cacert.pem"), "not a certificate\n").expect("write");
    let message = has_vm_error(root.path(), &job);
    assert!(message.contains("ca_cert_file"), "{message}");

    // An empty CA property is "not given".
    let props = with(minimal(), json!({"ironic": {"ca_cert": "  \n"}}));
    let (_root, job, value) = cpi_job(&props);
    assert!(value["ironic"].get("ca_cert_file").is_none(), "{value}");
    assert!(std::fs::read_to_string(job.join("config/cacert.pem"))
        .expect("file")
        .is_empty());
}

const SERVER_CONFIG_DIR: &str = "/var/vcap/jobs/ironic_cpi_server/config";

/// server.json with the job's absolute config paths moved into the rendered tree, checked by
/// `ironic_cpi_server --check-config`.
fn checked_server_json(job: &Path) -> Value {
    let text = std::fs::read_to_string(job.join("config/server.json")).expect("server.json");
    let value: Value = serde_json::from_str(&text).expect("server.json is JSON");
    let local = text.replace(
        SERVER_CONFIG_DIR,
        job.join("config").to_str().expect("utf-8"),
    );
    let path = job.join("config/server.local.json");
    std::fs::write(&path, local).expect("write");
    check_config(&server_binary(), &path).unwrap_or_else(|e| panic!("server.json: {e}"));
    value
}

#[test]
fn server_defaults_users_tls_and_bpm() {
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi_server", &json!({}), root.path());
    let value = checked_server_json(&job);
    let config = ServerConfig::from_value(value.clone()).expect("valid");
    assert_eq!(config.listen, "0.0.0.0:25780");
    assert_eq!(config.root, Path::new("/var/vcap/store/ironic_cpi_server"));
    let mounts: Vec<(&str, bool)> = config
        .mounts
        .iter()
        .map(|m| (m.prefix.as_str(), m.anonymous_read))
        .collect();
    // Config drives are published under unguessable paths that only writers can list: Ironic
    // reads them anonymously, as it reads images.
    assert_eq!(mounts, [("/images", true), ("/metadata", true)]);
    assert!(config.registry.enabled && !config.registry.anonymous_read);
    assert_eq!(
        (config.max_connections, config.max_anonymous_requests),
        (4096, 512)
    );
    assert_eq!(config.header_read_timeout_seconds.as_secs_f64(), 30.0);
    assert!(config.tls.is_none() && config.users.is_empty());

    let bpm: Value = serde_json::from_str(
        &std::fs::read_to_string(job.join("config/bpm.yml")).expect("bpm.yml"),
    )
    .expect("bpm.yml is JSON, hence YAML");
    let process = &bpm["processes"][0];
    assert_eq!(
        process["executable"],
        json!("/var/vcap/packages/ironic_cpi/bin/ironic_cpi_server")
    );
    assert_eq!(
        process["args"],
        json!(["-c", format!("{SERVER_CONFIG_DIR}/server.json")])
    );
    assert_eq!(process["persistent_disk"], json!(true));
    let monit = std::fs::read_to_string(job.join("monit")).expect("monit");
    assert!(monit.contains("/var/vcap/sys/run/bpm/ironic_cpi_server/ironic_cpi_server.pid"));
    assert!(monit.contains("bpm start ironic_cpi_server"));

    let (cert, key) = self_signed();
    let hash = bcrypt::hash("reader pw", 4).expect("bcrypt");
    let props = json!({"ironic_cpi_server": {
        "address": "::", "port": 8443,
        "users": [{"username": "cpi", "role": "write", "password": "w"},
                  {"username": "agents", "role": "read", "password_bcrypt": hash}],
        "tls": {"certificate": cert, "private_key": key},
        "metadata": {"anonymous_read": false}, "registry": {"enabled": false},
        "max_connections": 1000, "max_anonymous_requests": 100, "header_read_timeout_seconds": 10,
        "body_read_timeout_seconds": "20", "response_write_timeout_seconds": 40,
        "min_bytes_per_second": 512, "download_buffer_bytes": 8388608, "max_lock_seconds": 30,
        "send_buffer_bytes": 0,
        "locks": true}});
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi_server", &props, root.path());
    let value = checked_server_json(&job);
    assert_eq!(value["listen"], json!("[::]:8443"));
    assert_eq!(
        value["tls"],
        json!({"cert_file": format!("{SERVER_CONFIG_DIR}/tls.crt"),
               "key_file": format!("{SERVER_CONFIG_DIR}/tls.key")})
    );
    assert_eq!(
        std::fs::read_to_string(job.join("config/tls.key"))
            .expect("key")
            .trim(),
        key.trim()
    );
    assert_eq!(
        value["users"][1],
        json!({"username": "agents", "role": "read", "password_bcrypt": hash})
    );
    assert_eq!(value["registry"]["enabled"], json!(false));
    assert_eq!(value["mounts"][1]["anonymous_read"], json!(false));
    assert_eq!(value["mounts"][0]["locks"], json!(true));
    for (key, want) in [
        ("max_connections", json!(1000)),
        ("max_anonymous_requests", json!(100)),
        ("header_read_timeout_seconds", json!(10.0)),
        ("body_read_timeout_seconds", json!(20.0)),
        ("response_write_timeout_seconds", json!(40.0)),
        ("min_bytes_per_second", json!(512)),
        ("download_buffer_bytes", json!(8388608)),
        ("send_buffer_bytes", json!(0)),
        ("max_lock_seconds", json!(30.0)),
    ] {
        assert_eq!(value[key], want, "{key}");
    }

    let e = render(
        "ironic_cpi_server",
        "server.json.erb",
        &json!({"ironic_cpi_server": {"tls": {"certificate": cert}}}),
    )
    .expect_err("a certificate without a key");
    assert!(e.contains("private_key"), "{e}");
}

#[test]
fn example_cpi_config_passes_check_config() {
    check_config(
        Path::new(CPI),
        &repo_root().join("manifests/cpi.example.json"),
    )
    .expect("cpi.example.json");
}

/// A YAML file of the release as JSON, through Ruby's YAML (the parser BOSH uses).
fn yaml(path: &str) -> Value {
    let out = Command::new("ruby")
        .args([
            "-ryaml",
            "-rjson",
            "-e",
            "puts JSON.dump(YAML.safe_load(File.read(ARGV[0]), aliases: true))",
        ])
        .arg(repo_root().join(path))
        .output()
        .expect("ruby");
    assert!(out.status.success(), "{path}: {}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `((name))` variables replaced by plausible values, as `bosh int -v` would.
fn interpolate(value: &Value) -> Value {
    match value {
        Value::String(s) if s.contains("((") => {
            let mut out = s.clone();
            while let Some(start) = out.find("((") {
                let Some(len) = out[start..].find("))") else {
                    break;
                };
                let name = &out[start + 2..start + len];
                let replacement = if name.ends_with("_url") {
                    "http://10.0.0.5:6385".to_string()
                } else if name == "internal_ip" {
                    "10.0.0.6".to_string()
                } else {
                    format!("{name}-value")
                };
                out.replace_range(start..start + len + 2, &replacement);
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(interpolate).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), interpolate(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The top-level property sections an ops file sets under `prefix` (e.g.
/// `/cloud_provider/properties/`); deeper paths belong to other jobs (`director/cpi_job`).
fn ops_properties(ops: &Value, prefix: &str) -> Value {
    let mut props = json!({});
    for op in ops.as_array().expect("ops list") {
        let path = op["path"].as_str().expect("path");
        if let Some(key) = path.strip_prefix(prefix) {
            let key = key.trim_end_matches('?');
            if !key.contains('/') {
                props[key] = interpolate(&op["value"]);
            }
        }
    }
    props
}

#[test]
fn ops_file_properties_render_valid_configs() {
    let ops = yaml("manifests/ironic-cpi.yml");
    let auth = yaml("manifests/ironic-http-basic-auth.yml");
    let find = |path: &str| {
        ops.as_array()
            .expect("ops")
            .iter()
            .find(|op| op["path"] == json!(path))
            .map(|op| op["value"].clone())
    };
    assert_eq!(
        find("/instance_groups/name=bosh/properties/director/cpi_job?"),
        Some(json!("ironic_cpi"))
    );
    assert_eq!(
        find("/cloud_provider/template?"),
        Some(json!({"name": "ironic_cpi", "release": "ironic-cpi"}))
    );

    // create-env: bosh.yml's cloud_provider properties plus the ops file's.
    let mut create_env = json!({
        "agent": {"mbus": "https://mbus:pw@0.0.0.0:6868"},
        "blobstore": {"provider": "local", "path": "/var/vcap/micro_bosh/data/cache"}});
    let extra = ops_properties(&ops, "/cloud_provider/properties/");
    ironic_cpi::config::overlay(&mut create_env, extra.as_object().expect("object"));
    let (_root, _job, value) = cpi_job(&create_env);
    assert!(value.get("stemcell_repository").is_some(), "{value}");
    let basic = ops_properties(&auth, "/cloud_provider/properties/ironic/");
    let (_root, _job, value) = cpi_job(&with(create_env, json!({"ironic": basic})));
    assert_eq!(value["ironic"]["auth"]["type"], json!("http_basic"));

    // The director: bosh.yml's instance-group properties plus the ops file's.
    let mut director = json!({
        "agent": {"mbus": "nats://10.0.0.6:4222"},
        "nats": {"address": "10.0.0.6", "user": "nats", "password": "n"},
        "blobstore": {"provider": "dav", "address": "10.0.0.6", "port": 25250,
                      "agent": {"user": "agent", "password": "a"},
                      "tls": {"cert": {"ca": "CA", "certificate": "C", "private_key": "K"}}}});
    let extra = ops_properties(&ops, "/instance_groups/name=bosh/properties/");
    ironic_cpi::config::overlay(&mut director, extra.as_object().expect("object"));
    let (_root, _job, value) = cpi_job(&director);
    assert_eq!(value["agent"]["mbus"], json!("nats://10.0.0.6:4222"));
    assert_eq!(
        value["stemcell_repository"]["public_url"],
        json!("http://10.0.0.6:25780/images")
    );

    let server_job = ops
        .as_array()
        .expect("ops")
        .iter()
        .find(|op| op["value"]["name"] == json!("ironic_cpi_server"))
        .expect("the ops file adds ironic_cpi_server");
    let props = interpolate(&server_job["value"]["properties"]);
    let root = TempDir::new().expect("tempdir");
    let job = render_job("ironic_cpi_server", &props, root.path());
    let value = checked_server_json(&job);
    // The CPI's repository credentials are the server's write user.
    assert_eq!(
        value["users"][0]["username"],
        director["stemcell_repository"]["username"]
    );
    assert_eq!(
        value["users"][0]["password"],
        director["stemcell_repository"]["password"]
    );
}

#[test]
fn cloud_config_vm_types_parse_as_the_cpi_parses_them() {
    let cloud = yaml("manifests/cloud-config.yml");
    let azs = cloud["azs"].as_array().expect("azs");
    for az in azs {
        assert!(
            az["cloud_properties"]["availability_zone"].is_string(),
            "{az}"
        );
    }
    let mut enrolling = 0;
    for vm_type in cloud["vm_types"].as_array().expect("vm_types") {
        // The director merges the AZ's cloud_properties into the vm_type's.
        let mut merged = vm_type["cloud_properties"].clone();
        let az = azs[0]["cloud_properties"]
            .as_object()
            .expect("az cloud_properties");
        ironic_cpi::config::overlay(&mut merged, az);
        let props = VmCloudProperties::parse(merged.as_object().expect("object"))
            .unwrap_or_else(|e| panic!("vm_type {}: {}", vm_type["name"], e.message));
        assert_eq!(props.availability_zone.as_deref(), Some("rack-a"));
        if props.ironic_params.is_some() {
            enrolling += 1;
        }
    }
    assert!(
        enrolling > 0,
        "an example vm_type enrolls a machine with ironic_params"
    );
    for disk in cloud["disk_types"].as_array().expect("disk_types") {
        let device = disk["cloud_properties"]["device"].as_str();
        assert!(device.is_some_and(|d| d.starts_with("/dev/")), "{disk}");
    }
    let storage = cloud["networks"]
        .as_array()
        .expect("networks")
        .iter()
        .flat_map(|n| n["subnets"].as_array().expect("subnets"))
        .filter(|s| s["cloud_properties"].get("macs").is_some())
        .count();
    assert!(storage > 0, "an example subnet lists cloud_properties.macs");
}

/// Every property a job spec documents is read by some template: a spec entry that nothing
/// renders would be a setting that silently does nothing.
#[test]
fn every_spec_property_is_read_by_a_template() {
    let (cert, key) = self_signed();
    let keystone = "https://keystone.example.com:5000/v3";
    let repo_props = |name: &str| {
        json!({"url": format!("http://127.0.0.1:25780/{name}"), "public_url": "http://10.0.0.6:25780/x",
               "username": "u", "password": "p", "ca_cert": cert, "timeout": 30})
    };
    let cpi_cases = [
        json!({"ironic": {"url": "https://ironic:6385", "ca_cert": cert,
                          "auth": {"type": "http_basic", "username": "u", "password": "p"}},
               "stemcell_repository": repo_props("images"),
               "metadata_repository": repo_props("metadata"),
               "registry": {"endpoint": "http://r/registry", "agent_endpoint": "http://a/registry",
                            "username": "r", "password": "p", "ca_cert": cert},
               "nats": {"address": "10.0.0.6", "user": "n", "password": "p"},
               "agent": {"nats": {"address": "10.0.0.7"}, "blobstore": {"address": "10.0.0.7"}},
               "blobstore": {"provider": "dav", "address": "10.0.0.6",
                             "agent": {"user": "a", "password": "p"}, "tls": {"cert": {"ca": "CA"}}},
               "defaults": {"ephemeral_disk": "/dev/sdb"},
               "env": {"http_proxy": "http://p:3128", "https_proxy": "http://p:3128",
                       "no_proxy": "localhost"}}),
        json!({"ironic": {"url": "http://ironic:6385",
                          "auth": {"type": "keystone_password", "auth_url": keystone, "username": "u",
                                   "password": "p", "project_name": "bm", "region_name": "R"}},
               "agent": {"mbus": "nats://10.0.0.6:4222"},
               "blobstore": {"provider": "local", "path": "/var/vcap/micro_bosh/data/cache"}}),
        json!({"ironic": {"url": "http://ironic:6385",
                          "auth": {"type": "keystone_application_credential", "auth_url": keystone,
                                   "application_credential_id": "i",
                                   "application_credential_secret": "s"}},
               "blobstore": {"provider": "s3", "bucket_name": "b", "access_key_id": "k",
                             "secret_access_key": "s", "host": "s3", "s3_region": "r",
                             "s3_port": 443, "use_ssl": true, "ssl_verify_peer": true,
                             "s3_force_path_style": true, "s3_signature_version": "4"}}),
        json!({"ironic": {"url": "http://ironic:6385", "auth": {"type": "token", "token": "t"}}}),
    ];
    let server_cases =
        [json!({"ironic_cpi_server": {"tls": {"certificate": cert, "private_key": key}}})];
    for (job, cases) in [
        ("ironic_cpi", &cpi_cases[..]),
        ("ironic_cpi_server", &server_cases[..]),
    ] {
        let work = TempDir::new().expect("tempdir");
        let trace = work.path().join("trace");
        for (i, props) in cases.iter().enumerate() {
            let out = work.path().join(i.to_string());
            let dir = format!("jobs/{job}");
            ruby_render_traced(
                &["--job", &dir, "-", out.to_str().expect("utf-8")],
                props,
                Some(&trace),
            )
            .unwrap_or_else(|e| panic!("{job} case {i}: {e}"));
        }
        let read = std::fs::read_to_string(&trace).expect("trace");
        let read: std::collections::BTreeSet<&str> = read.lines().collect();
        let spec = yaml(&format!("jobs/{job}/spec"));
        let unread: Vec<&String> = spec["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .filter(|name| !read.contains(name.as_str()))
            .collect();
        assert!(
            unread.is_empty(),
            "{job}: spec properties no template reads: {unread:?}"
        );
    }
}
