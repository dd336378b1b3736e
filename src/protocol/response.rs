//! The response envelope. All three keys are always present (the director's schema requires
//! them), `log` is always a string and `ok_to_retry` always a boolean.

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Response {
    pub result: Value,
    pub error: Option<ErrorBody>,
    pub log: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub ok_to_retry: bool,
}

impl Response {
    pub fn ok(result: Value, log: String) -> Response {
        Response {
            result,
            error: None,
            log,
        }
    }

    pub fn err(e: &Error, log: String) -> Response {
        Response {
            result: Value::Null,
            error: Some(ErrorBody {
                kind: e.kind.bosh_type().to_string(),
                message: e.message.clone(),
                ok_to_retry: e.ok_to_retry,
            }),
            log,
        }
    }

    #[expect(
        clippy::expect_used,
        reason = "serialising plain data with string keys cannot fail"
    )]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("response serialises")
    }
}
