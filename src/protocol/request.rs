//! The request envelope: `method`, `arguments`, `context`, `api_version`.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The director refuses to send more than this through a pipe in practice; anything larger is
/// refused whole rather than truncated into invalid JSON (the original CPI read 100 KiB and cut).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Context keys that belong to the director; every other key is the CPI's to read (the CPI
/// takes them as cpi-config properties that override its config file).
pub const RESERVED_CONTEXT_KEYS: [&str; 3] = ["director_uuid", "request_id", "vm"];

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub arguments: Vec<Value>,
    pub context: Context,
    /// Negotiated CPI API version; a missing or 0 value means 1.
    pub api_version: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub director_uuid: Option<String>,
    pub request_id: Option<String>,
    /// `context.vm.stemcell.api_version`, sent for calls that concern a VM's stemcell.
    pub stemcell_api_version: Option<u32>,
    /// Every other context key (cpi-config properties that override the CPI's config file).
    pub config_overrides: Map<String, Value>,
}

impl Request {
    pub fn parse(bytes: &[u8]) -> Result<Request> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::cpi(
                "empty request: expected one JSON object on stdin, e.g. \
                 {\"method\":\"info\",\"arguments\":[],\"context\":{\"director_uuid\":\"x\"}}",
            ));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::cpi(format!("request is not valid JSON: {e}")))?;
        Request::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Request> {
        let Value::Object(mut obj) = value else {
            return Err(Error::cpi(format!(
                "request must be a JSON object, got {}",
                kind_of(&value)
            )));
        };
        let method = match obj.remove("method") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return Err(Error::cpi("request key 'method' is empty")),
            Some(other) => {
                return Err(Error::cpi(format!(
                    "request key 'method' must be a string, got {}",
                    kind_of(&other)
                )))
            }
            None => return Err(Error::cpi("request has no 'method' key")),
        };
        let arguments = match obj.remove("arguments") {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => {
                return Err(Error::cpi(format!(
                    "request for '{method}' has no 'arguments' array"
                )))
            }
            Some(other) => {
                return Err(Error::cpi(format!(
                    "request key 'arguments' must be an array, got {}",
                    kind_of(&other)
                )))
            }
        };
        let context = match obj.remove("context") {
            Some(Value::Object(c)) => Context::from_map(c)?,
            Some(Value::Null) | None => Context::default(),
            Some(other) => {
                return Err(Error::cpi(format!(
                    "request key 'context' must be an object, got {}",
                    kind_of(&other)
                )))
            }
        };
        let api_version = match obj.remove("api_version") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => 1,
                Some(v) if v <= 1000 => v as u32,
                _ => {
                    return Err(Error::cpi(format!(
                        "request key 'api_version' must be a small positive integer, got {n}"
                    )))
                }
            },
            Some(other) => {
                return Err(Error::cpi(format!(
                    "request key 'api_version' must be an integer, got {}",
                    kind_of(&other)
                )))
            }
        };
        Ok(Request {
            method,
            arguments,
            context,
            api_version,
        })
    }

    /// Registry-less iff the negotiated API and the stemcell both speak v2 (bosh.io docs:
    /// `cpi-api-v2.md`, `cpi-api-v2-migration-guide.md`).
    pub fn registry_less(&self) -> bool {
        self.api_version >= 2 && self.context.stemcell_api_version.unwrap_or(1) >= 2
    }
}

impl Context {
    fn from_map(mut map: Map<String, Value>) -> Result<Context> {
        let director_uuid = optional_string(&mut map, "director_uuid")?;
        let request_id = optional_string(&mut map, "request_id")?;
        let stemcell_api_version = match map.remove("vm") {
            None | Some(Value::Null) => None,
            Some(vm) => match vm.pointer("/stemcell/api_version") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v <= 1000) => {
                    n.as_u64().map(|v| v as u32)
                }
                Some(other) => {
                    return Err(Error::cpi(format!(
                        "context key 'vm.stemcell.api_version' must be an integer, got {other}"
                    )))
                }
            },
        };
        debug_assert!(RESERVED_CONTEXT_KEYS.iter().all(|k| !map.contains_key(*k)));
        Ok(Context {
            director_uuid,
            request_id,
            stemcell_api_version,
            config_overrides: map,
        })
    }
}

fn optional_string(map: &mut Map<String, Value>, key: &str) -> Result<Option<String>> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::cpi(format!(
            "context key '{key}' must be a string, got {}",
            kind_of(&other)
        ))),
    }
}

/// How a JSON value is named in error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn parses_a_director_request() {
        let r = Request::parse(
            br#"{"method":"create_vm","arguments":["a"],"context":{"director_uuid":"d",
            "request_id":"cpi-1","vm":{"stemcell":{"api_version":3}},"ironic":{"url":"http://x"}},
            "api_version":2}"#,
        )
        .unwrap();
        assert_eq!(r.method, "create_vm");
        assert_eq!(r.api_version, 2);
        assert_eq!(r.context.stemcell_api_version, Some(3));
        assert_eq!(r.context.request_id.as_deref(), Some("cpi-1"));
        assert!(r.context.config_overrides.contains_key("ironic"));
        assert!(!r.context.config_overrides.contains_key("vm"));
        assert!(r.registry_less());
    }

    #[test]
    fn missing_api_version_means_one() {
        let r = Request::parse(br#"{"method":"info","arguments":[],"context":{}}"#).unwrap();
        assert_eq!(r.api_version, 1);
        assert!(!r.registry_less());
    }

    #[test]
    fn bad_envelopes_are_cpi_errors_naming_the_key() {
        for (input, needle) in [
            (&b""[..], "empty"),
            (b"   \n", "empty"),
            (b"{not json", "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"arguments":[]}"#, "'method'"),
            (br#"{"method":5,"arguments":[]}"#, "'method'"),
            (br#"{"method":"info"}"#, "'arguments'"),
            (br#"{"method":"info","arguments":{}}"#, "'arguments'"),
            (
                br#"{"method":"info","arguments":[],"context":"x"}"#,
                "'context'",
            ),
            (
                br#"{"method":"info","arguments":[],"api_version":"2"}"#,
                "'api_version'",
            ),
            (
                br#"{"method":"info","arguments":[],"context":{"request_id":7}}"#,
                "'request_id'",
            ),
        ] {
            let e = Request::parse(input).unwrap_err();
            assert_eq!(e.kind, ErrorKind::CpiError);
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
    }
}
