//! Positional arguments, checked by type, with errors that name the argument.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::request::kind_of;
use crate::error::{Error, Result};

/// The JSON type the contract gives an argument; checked before any action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// A non-empty string (ids, paths).
    String,
    /// A non-empty string or null (create_disk's vm_cid).
    OptionalString,
    /// An object; null is taken as empty (cloud_properties and env may be absent).
    Object,
    /// An array of strings (disk_cids).
    StringList,
    PositiveInteger,
}

#[derive(Debug, Clone, Copy)]
pub struct Arg {
    pub name: &'static str,
    pub ty: ArgType,
}

impl Arg {
    pub const fn new(name: &'static str, ty: ArgType) -> Self {
        Arg { name, ty }
    }
}

/// The arguments of one call, with the names the contract gives them.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    pub method: &'a str,
    spec: &'static [Arg],
    values: &'a [Value],
}

impl<'a> Args<'a> {
    pub fn new(method: &'a str, spec: &'static [Arg], values: &'a [Value]) -> Self {
        Args {
            method,
            spec,
            values,
        }
    }

    fn name(&self, i: usize) -> &'static str {
        self.spec.get(i).map_or("argument", |a| a.name)
    }

    /// Check count and types of every declared argument, so actions only see well-typed input.
    pub fn check(&self) -> Result<()> {
        for (i, arg) in self.spec.iter().enumerate() {
            match arg.ty {
                ArgType::String => self.string(i).map(drop)?,
                ArgType::OptionalString => {
                    self.value(i)?;
                    self.optional_string(i).map(drop)?
                }
                ArgType::Object => self.object(i).map(drop)?,
                ArgType::StringList => {
                    self.value(i)?;
                    self.string_list(i).map(drop)?
                }
                ArgType::PositiveInteger => self.positive_integer(i).map(drop)?,
            }
        }
        Ok(())
    }

    /// Argument `i`; a missing one is an error (extra ones are tolerated: newer directors add
    /// arguments, e.g. create_stemcell's tags at API v3).
    pub fn value(&self, i: usize) -> Result<&'a Value> {
        self.values.get(i).ok_or_else(|| {
            Error::cpi(format!(
                "{} takes {} argument(s) ({}), got {}: '{}' is missing",
                self.method,
                self.spec.len(),
                self.spec
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.values.len(),
                self.name(i)
            ))
        })
    }

    fn wrong(&self, i: usize, want: &str, got: &Value) -> Error {
        Error::cpi(format!(
            "{}: argument {} '{}' must be {want}, got {}",
            self.method,
            i + 1,
            self.name(i),
            kind_of(got)
        ))
    }

    pub fn string(&self, i: usize) -> Result<&'a str> {
        match self.value(i)? {
            Value::String(s) if !s.is_empty() => Ok(s),
            v @ Value::String(_) => Err(self.wrong(i, "a non-empty string", v)),
            v => Err(self.wrong(i, "a string", v)),
        }
    }

    pub fn optional_string(&self, i: usize) -> Result<Option<&'a str>> {
        match self.values.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(v) => Err(self.wrong(i, "a non-empty string or null", v)),
        }
    }

    /// An object argument; null counts as empty (cloud_properties and env may be absent).
    pub fn object(&self, i: usize) -> Result<Map<String, Value>> {
        match self.value(i)? {
            Value::Object(m) => Ok(m.clone()),
            Value::Null => Ok(Map::new()),
            v => Err(self.wrong(i, "an object", v)),
        }
    }

    pub fn string_list(&self, i: usize) -> Result<Vec<String>> {
        match self.values.get(i) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(i, "an array of strings", other)),
                })
                .collect(),
            Some(v) => Err(self.wrong(i, "an array of strings", v)),
        }
    }

    pub fn positive_integer(&self, i: usize) -> Result<u64> {
        match self.value(i)? {
            Value::Number(n) => match n.as_u64() {
                Some(v) if v > 0 => Ok(v),
                _ => Err(self.wrong(i, "a positive integer", &Value::Number(n.clone()))),
            },
            v => Err(self.wrong(i, "a positive integer", v)),
        }
    }

    /// Decode an argument into a typed structure; the error names the path inside it.
    pub fn typed<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let v = self.value(i)?.clone();
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!(" at '{path}'")
            };
            Error::cpi(format!(
                "{}: argument {} '{}'{at}: {}",
                self.method,
                i + 1,
                self.name(i),
                ironic_cpi_common::redact::serde_message(&e.into_inner().to_string())
            ))
        })
    }
}

/// A Rust type an argument decodes into, and the JSON type the contract gives it: the typed
/// argument structs (`protocol::methods`) are made of these.
pub trait FromArg: Sized {
    const TYPE: ArgType;
    fn from_arg(args: &Args, i: usize) -> Result<Self>;
}

impl FromArg for String {
    const TYPE: ArgType = ArgType::String;
    fn from_arg(args: &Args, i: usize) -> Result<Self> {
        args.string(i).map(str::to_string)
    }
}

impl FromArg for Option<String> {
    const TYPE: ArgType = ArgType::OptionalString;
    fn from_arg(args: &Args, i: usize) -> Result<Self> {
        args.value(i)?;
        Ok(args.optional_string(i)?.map(str::to_string))
    }
}

impl FromArg for Map<String, Value> {
    const TYPE: ArgType = ArgType::Object;
    fn from_arg(args: &Args, i: usize) -> Result<Self> {
        args.object(i)
    }
}

impl FromArg for Vec<String> {
    const TYPE: ArgType = ArgType::StringList;
    fn from_arg(args: &Args, i: usize) -> Result<Self> {
        args.value(i)?;
        args.string_list(i)
    }
}

/// A positive integer (sizes in MiB).
impl FromArg for u64 {
    const TYPE: ArgType = ArgType::PositiveInteger;
    fn from_arg(args: &Args, i: usize) -> Result<Self> {
        args.positive_integer(i)
    }
}

/// An object decoded into `T`; errors name the path inside it.
#[derive(Debug, Clone)]
pub struct Typed<T>(pub T);

impl<T: DeserializeOwned> FromArg for Typed<T> {
    const TYPE: ArgType = ArgType::Object;
    fn from_arg(args: &Args, i: usize) -> Result<Self> {
        args.object(i)?;
        args.typed(i).map(Typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_method_and_argument() {
        const SPEC: &[Arg] = &[
            Arg::new("agent_id", ArgType::String),
            Arg::new("stemcell_cid", ArgType::String),
            Arg::new("cloud_properties", ArgType::Object),
        ];
        let values = vec![json!(5), json!("x")];
        let a = Args::new("create_vm", SPEC, &values);
        assert!(a.check().is_err());
        let e = a.string(0).unwrap_err();
        assert!(
            e.message.contains("'agent_id'") && e.message.contains("a number"),
            "{}",
            e.message
        );
        let e = a.object(2).unwrap_err();
        assert!(
            e.message.contains("'cloud_properties' is missing"),
            "{}",
            e.message
        );
        assert_eq!(a.string(1).unwrap(), "x");
    }
}
