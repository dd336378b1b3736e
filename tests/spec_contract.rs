//! The CPI contract as data: `spec/<method>.json` holds example requests and responses for every
//! method in the dispatch table. This test checks that the examples and the code agree:
//! every request parses with the CPI's own parser and decodes into the method's argument struct,
//! every result decodes into the method's result type at the request's API version (both from
//! `protocol::methods`, the definitions the dispatch table runs), every response has the envelope
//! the director validates, and the methods that answer without Ironic
//! give exactly the documented answer when the real binary is run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use ironic_cpi::protocol::methods::{self, MethodDef};
use ironic_cpi::protocol::{Args, Request};
use ironic_cpi::rpc::dispatch::{self, METHODS};
use ironic_cpi::ErrorKind;

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec")
}

fn load(method: &str) -> Value {
    let path = spec_dir().join(format!("{method}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn examples(method: &str) -> Vec<Value> {
    let spec = load(method);
    assert_eq!(spec["method"], method);
    let ex = spec["examples"].as_array().expect("examples array").clone();
    assert!(!ex.is_empty(), "{method}: no examples");
    ex
}

fn check_response_shape(method: &str, api_version: u32, name: &str, resp: &Value) {
    let ctx = format!("{method} / {name}");
    let obj = resp
        .as_object()
        .unwrap_or_else(|| panic!("{ctx}: response not an object"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["error", "log", "result"], "{ctx}: keys");
    assert!(resp["log"].is_string(), "{ctx}: log must be a string");
    match &resp["error"] {
        Value::Null => check_result(method, api_version, &ctx, &resp["result"]),
        Value::Object(e) => {
            assert!(
                resp["result"].is_null(),
                "{ctx}: result must be null on error"
            );
            let ty = e["type"].as_str().expect("error.type string");
            assert!(
                ErrorKind::from_bosh_type(ty).is_some(),
                "{ctx}: unknown error type {ty}"
            );
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{ctx}: message"
            );
            assert!(
                e["ok_to_retry"].is_boolean(),
                "{ctx}: ok_to_retry must be a boolean"
            );
        }
        other => panic!("{ctx}: error must be null or an object, got {other}"),
    }
}

/// A result decodes through the method's result type (`protocol::methods`) at the request's API
/// version, and reads back unchanged.
fn check_result(method: &str, api_version: u32, ctx: &str, r: &Value) {
    let def = definition(method);
    if let Err(e) = (def.decode_result)(api_version, r) {
        panic!("{ctx}: result {r} is not {method}'s result at api_version {api_version}: {e}");
    }
}

fn definition(method: &str) -> &'static MethodDef {
    methods::METHODS
        .iter()
        .find(|d| d.name == method)
        .unwrap_or_else(|| panic!("{method} has no definition in protocol::methods"))
}

#[test]
fn every_method_has_a_spec_and_every_spec_a_method() {
    for m in METHODS {
        load(m.name);
    }
    for entry in std::fs::read_dir(spec_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(method) = name.strip_suffix(".json") else {
            continue;
        };
        if method == "malformed" {
            continue;
        }
        assert!(
            dispatch::find(method).is_some(),
            "spec/{name} names no method in the table"
        );
    }
}

#[test]
fn example_requests_parse_and_decode_into_the_argument_structs() {
    for m in METHODS {
        let def = definition(m.name);
        for ex in examples(m.name) {
            let name = ex["name"].as_str().unwrap_or("?");
            let req = Request::from_value(ex["request"].clone())
                .unwrap_or_else(|e| panic!("{} / {name}: {e}", m.name));
            assert_eq!(req.method, m.name);
            let expects_cpi_error = ex["response"]["error"]["type"] == "Bosh::Clouds::CpiError";
            let decoded = (def.decode_args)(&Args::new(def.name, def.args, &req.arguments));
            // An example of a CpiError is an example of bad arguments; every other one must be
            // a request the director really sends.
            assert_eq!(
                decoded.is_ok(),
                !expects_cpi_error,
                "{} / {name}: arguments {:?}: {decoded:?}",
                m.name,
                req.arguments
            );
        }
    }
}

#[test]
fn example_responses_have_the_director_shape() {
    for m in METHODS {
        for ex in examples(m.name) {
            let name = ex["name"].as_str().unwrap_or("?");
            let api = Request::from_value(ex["request"].clone())
                .unwrap()
                .api_version;
            check_response_shape(m.name, api, name, &ex["response"]);
        }
    }
}

struct Run {
    stdout: String,
    response: Value,
}

fn run_cpi(config: &Path, stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironic_cpi"))
        .arg("-c")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ironic_cpi");
    // Write from a thread: the CPI may stop reading early (oversized input) and answer at once.
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout must be exactly one line: {stdout}"
    );
    let response = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    Run { stdout, response }
}

fn offline_config() -> tempfile::NamedTempFile {
    // Port 9 (discard) on loopback: nothing answers there, so any Ironic access would fail.
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(
        f,
        "{}",
        json!({"ironic": {"url": "http://127.0.0.1:9", "connect_timeout": 1}})
    )
    .unwrap();
    f
}

/// Methods that answer from the code alone, without Ironic or a repository.
const OFFLINE: [&str; 10] = [
    "info",
    "ping",
    "resize_disk",
    "update_disk",
    "snapshot_disk",
    "delete_snapshot",
    "create_network",
    "delete_network",
    "current_vm_id",
    "configure_networks",
];

#[test]
fn offline_methods_answer_exactly_as_specified() {
    let config = offline_config();
    for method in OFFLINE {
        for ex in examples(method) {
            let name = ex["name"].as_str().unwrap_or("?");
            let stdin = serde_json::to_vec(&ex["request"]).unwrap();
            let run = run_cpi(config.path(), &stdin);
            assert_eq!(
                run.response["result"], ex["response"]["result"],
                "{method} / {name}: {}",
                run.stdout
            );
            assert_eq!(
                run.response["error"], ex["response"]["error"],
                "{method} / {name}: {}",
                run.stdout
            );
            check_response_shape(method, 1, name, &run.response);
        }
    }
}

#[test]
fn argument_errors_in_the_spec_are_what_the_binary_answers() {
    let config = offline_config();
    for m in METHODS {
        for ex in examples(m.name) {
            if ex["response"]["error"]["type"] != "Bosh::Clouds::CpiError" {
                continue;
            }
            let stdin = serde_json::to_vec(&ex["request"]).unwrap();
            let run = run_cpi(config.path(), &stdin);
            assert_eq!(run.response["error"], ex["response"]["error"], "{}", m.name);
        }
    }
}

#[test]
fn malformed_requests_get_typed_errors_and_exit_zero() {
    let config = offline_config();
    let corpus = load("malformed");
    for case in corpus["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let stdin = match case.get("stdin_hex") {
            Some(h) => hex::decode(h.as_str().unwrap()).unwrap(),
            None => case["stdin"].as_str().unwrap().as_bytes().to_vec(),
        };
        let run = run_cpi(config.path(), &stdin);
        assert_eq!(
            run.response["error"]["type"], case["type"],
            "{name}: {}",
            run.stdout
        );
        check_response_shape("?", 1, name, &run.response);
    }
}

#[test]
fn config_problems_are_cpi_errors_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let request = br#"{"method":"has_vm","arguments":["x"],"context":{"director_uuid":"d"}}"#;
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"ironic\": ").unwrap();
    let wrong_type = dir.path().join("wrong.json");
    std::fs::write(
        &wrong_type,
        r#"{"ironic": {"url": "http://x:6385", "page_size": "many"}}"#,
    )
    .unwrap();
    for (path, needle) in [
        (dir.path().join("missing.json"), "cannot read"),
        (broken, "not valid JSON"),
        (wrong_type, "ironic.page_size"),
    ] {
        let run = run_cpi(&path, request);
        let err = &run.response["error"];
        assert_eq!(err["type"], "Bosh::Clouds::CpiError", "{}", run.stdout);
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn oversized_requests_are_refused_not_truncated() {
    let config = offline_config();
    let mut big = br#"{"method":"info","arguments":[],"context":{"pad":""#.to_vec();
    big.resize(big.len() + 64 * 1024 * 1024, b'a');
    big.extend_from_slice(br#""}}"#);
    let run = run_cpi(config.path(), &big);
    assert_eq!(run.response["error"]["type"], "Bosh::Clouds::CpiError");
    assert!(run.response["error"]["message"]
        .as_str()
        .unwrap()
        .contains("64 MiB"));
}
