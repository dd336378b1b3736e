//! Shared by the `fuzz_*` property tests: JSON generators (arbitrary documents, and valid
//! documents with random damage), and a runner that counts executions and can run for a time
//! budget instead of a case count.
//!
//! `IRONIC_CPI_FUZZ_CASES` (default 256) sets the cases per target; `IRONIC_CPI_FUZZ_SECONDS`
//! makes each target run for that long instead (bench/fuzz does, for minutes). Each target
//! prints `fuzz <name>: N executions in S s`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value};

/// Strings that tend to break parsers: empty, huge, control characters, non-ASCII, look-alikes
/// of MACs, IPs, URLs and numbers.
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        Just(String::new()),
        Just("\u{0}".to_string()),
        Just("52:54:00:AB:cd:0F".to_string()),
        Just("52-54-00-ab-cd-0f".to_string()),
        Just("5254.00ab.cd0f".to_string()),
        Just("zz:zz:zz:zz:zz:zz".to_string()),
        Just("10.0.0.256".to_string()),
        Just("255.255.255.0".to_string()),
        Just("::1".to_string()),
        Just("fe80::/64".to_string()),
        Just("24".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("http://user:pw@[::1]:-1/".to_string()),
        Just("manual".to_string()),
        Just("dynamic".to_string()),
        Just("vip".to_string()),
        Just(">= 100".to_string()),
        Just("ééé\u{202e}💥".to_string()),
        "[a-z_]{1,8}",
        proptest::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(1e308)),
        Just(Value::from(0.5)),
    ]
}

/// Any JSON document, a few levels deep, with keys drawn from `keys` (plus random ones).
pub fn arb_json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => proptest::sample::select(keys).prop_map(str::to_string),
        1 => nasty_string(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to a document: at a random path, replace, delete or duplicate a node.
#[derive(Debug, Clone)]
pub struct Damage {
    /// Indices into the children at each level (taken modulo their count).
    path: Vec<usize>,
    kind: u8,
    replacement: Value,
}

pub fn damage(keys: &'static [&'static str]) -> impl Strategy<Value = Damage> {
    (
        proptest::collection::vec(any::<usize>(), 0..6),
        0u8..4,
        arb_json(keys),
    )
        .prop_map(|(path, kind, replacement)| Damage {
            path,
            kind,
            replacement,
        })
}

impl Damage {
    pub fn apply(&self, doc: &mut Value) {
        apply_at(doc, &self.path, self.kind, &self.replacement);
    }
}

fn apply_at(node: &mut Value, path: &[usize], kind: u8, replacement: &Value) {
    let Some((&first, rest)) = path.split_first() else {
        *node = replacement.clone();
        return;
    };
    match node {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(first % map.len())
                .cloned()
                .unwrap_or_default();
            if rest.is_empty() || !map[&key].is_object() && !map[&key].is_array() {
                match kind {
                    0 => {
                        map.remove(&key);
                    }
                    1 => {
                        map.insert(key, replacement.clone());
                    }
                    2 => {
                        // A wrong-typed scalar in place of what was there.
                        let v = match &map[&key] {
                            Value::String(_) => Value::from(7),
                            Value::Number(_) => Value::from("7"),
                            Value::Bool(b) => Value::from(if *b { "true" } else { "false" }),
                            Value::Null => Value::from(false),
                            Value::Array(_) => Value::from("[]"),
                            Value::Object(_) => Value::Array(vec![]),
                        };
                        map.insert(key, v);
                    }
                    _ => {
                        map.insert(format!("{key}_"), replacement.clone());
                    }
                }
            } else if let Some(child) = map.get_mut(&key) {
                apply_at(child, rest, kind, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = first % items.len();
            if rest.is_empty() {
                match kind {
                    0 => {
                        items.remove(i);
                    }
                    3 => items.push(replacement.clone()),
                    _ => items[i] = replacement.clone(),
                }
            } else {
                apply_at(&mut items[i], rest, kind, replacement);
            }
        }
        _ => *node = replacement.clone(),
    }
}

/// Up to 4 kinds of damage applied to `valid`.
pub fn damaged(valid: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    proptest::collection::vec(damage(keys), 0..4).prop_map(move |ds| {
        let mut doc = valid.clone();
        for d in &ds {
            d.apply(&mut doc);
        }
        doc
    })
}

fn cases() -> u32 {
    std::env::var("IRONIC_CPI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn time_budget() -> Option<Duration> {
    std::env::var("IRONIC_CPI_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Run `check` on generated inputs: a case count, or repeated runs until the time budget is
/// spent. A failure (a panic included) shrinks the input and fails the test with it. `check`
/// says whether the input was accepted (went past validation), so the output shows how deep the
/// inputs reach.
pub fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let executions = AtomicU64::new(0);
    let accepted = AtomicU64::new(0);
    let started = Instant::now();
    let budget = time_budget();
    let per_run = cases();
    loop {
        let mut runner = TestRunner::new(Config {
            cases: per_run,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |input| {
            executions.fetch_add(1, Ordering::Relaxed);
            if check(input)? {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("fuzz {name}: {e}");
        }
        if budget.is_none_or(|b| started.elapsed() >= b) {
            break;
        }
    }
    eprintln!(
        "fuzz {name}: {} executions ({} accepted) in {:.1} s, no panic",
        executions.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
