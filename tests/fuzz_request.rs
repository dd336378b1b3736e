//! Bad input for the request parser and the dispatch table, up to the argument check: never a
//! panic, always one response the director can read (`result`, `error`, `log`), and a
//! `Bosh::Clouds::*` error type whenever something is refused.
//!
//! Inputs: arbitrary bytes, arbitrary JSON, and every example request of spec/*.json with
//! random damage (keys removed, values replaced or re-typed, truncation, flipped bytes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod fuzz_support;

use proptest::prelude::*;
use serde_json::Value;

use fuzz_support::{arb_json, damaged, fuzz};
use ironic_cpi::protocol::args::ArgType;
use ironic_cpi::protocol::{Args, Request};
use ironic_cpi::rpc::dispatch;

const KEYS: &[&str] = &[
    "method",
    "arguments",
    "context",
    "api_version",
    "director_uuid",
    "request_id",
    "vm",
    "stemcell",
    "info",
    "create_vm",
    "has_vm",
    "attach_disk",
];

/// The `request` of every example in spec/*.json.
fn spec_requests() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let doc: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        for ex in doc["examples"].as_array().into_iter().flatten() {
            out.push(ex["request"].clone());
        }
    }
    assert!(out.len() > 20, "spec/ examples found: {}", out.len());
    out
}

/// The bytes a request becomes on stdin, sometimes cut short or with one byte changed.
fn wire(doc: Value, cut: Option<usize>, flip: Option<(usize, u8)>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&doc).unwrap();
    if let Some((at, b)) = flip {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = b;
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    let seeds = spec_requests();
    let damaged_spec = proptest::sample::select(seeds)
        .prop_flat_map(|seed| damaged(seed, KEYS))
        .boxed();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        2 => (arb_json(KEYS), proptest::option::of(any::<usize>()))
            .prop_map(|(doc, cut)| wire(doc, cut, None)),
        6 => (
            damaged_spec,
            proptest::option::weighted(0.1, any::<usize>()),
            proptest::option::weighted(0.1, (any::<usize>(), any::<u8>())),
        )
            .prop_map(|(doc, cut, flip)| wire(doc, cut, flip)),
    ]
}

fn check_response(input: &[u8]) -> Result<(), TestCaseError> {
    // No config: methods that need one are refused before any I/O, info and ping answer.
    let response = dispatch::handle(input, None);
    let text = response.to_json();
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("response is not JSON ({e}): {text}")))?;
    prop_assert!(v.get("result").is_some(), "{}", text);
    prop_assert!(v["log"].is_string(), "{}", text);
    if !v["error"].is_null() {
        let ty = v["error"]["type"].as_str().unwrap_or("");
        prop_assert!(ty.starts_with("Bosh::Clouds::"), "{}", text);
        prop_assert!(v["error"]["ok_to_retry"].is_boolean(), "{}", text);
        prop_assert!(
            !v["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            text
        );
        prop_assert!(v["result"].is_null(), "{}", text);
    }
    Ok(())
}

/// The dispatch table's argument check, and the typed accessors the actions use after it.
/// Whether the input passed the check.
fn check_arguments(input: &[u8]) -> Result<bool, TestCaseError> {
    let Ok(request) = Request::parse(input) else {
        return Ok(false);
    };
    let Some(method) = dispatch::find(&request.method) else {
        return Ok(false);
    };
    let args = Args::new(method.name, method.args, &request.arguments);
    if args.check().is_err() {
        return Ok(false);
    }
    for (i, arg) in method.args.iter().enumerate() {
        let ok = match arg.ty {
            ArgType::String => args.string(i).is_ok(),
            ArgType::OptionalString => args.optional_string(i).is_ok(),
            ArgType::Object => args.object(i).is_ok(),
            ArgType::StringList => args.string_list(i).is_ok(),
            ArgType::PositiveInteger => args.positive_integer(i).is_ok(),
        };
        prop_assert!(
            ok,
            "{}: argument {} passed the check but not its accessor",
            method.name,
            arg.name
        );
    }
    Ok(true)
}

#[test]
fn requests_never_panic_and_always_answer() {
    fuzz("request", inputs(), |input| {
        check_response(&input)?;
        check_arguments(&input)
    });
}
