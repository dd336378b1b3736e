//! Every CPI method: its name, its arguments in the order, with the names and the JSON types the
//! contract gives them, and its result (`docs` of the director: `cpi_api_calls`;
//! `spec/<method>.json` holds examples). Each definition is the only one: the dispatch table's
//! names and argument lists, the check run before any action, the value the action receives,
//! the type it answers with, and the checks of the spec examples all come from it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::args::{Arg, Args, FromArg, Typed};
use crate::error::Result;

/// One CPI method: its name, its arguments and its result.
pub trait Method: Sized {
    const NAME: &'static str;
    /// The arguments, for the argument check and the error messages.
    const SPEC: &'static [Arg];
    type Result: Reply;
    /// Read the arguments in order (errors name the method, position and argument).
    fn decode(args: &Args) -> Result<Self>;
}

/// A method's result: what the action answers and the director reads.
pub trait Reply: Serialize + DeserializeOwned {
    /// Whether the director takes this value at the negotiated API version (create_vm and
    /// attach_disk answer differently at v1 and v2).
    fn accepted(&self, _api_version: u32) -> bool {
        true
    }
}

/// A method as data, for the dispatch table and the spec examples.
#[derive(Debug, Clone, Copy)]
pub struct MethodDef {
    pub name: &'static str,
    pub args: &'static [Arg],
    /// Decode a request's arguments through the method's argument struct.
    pub decode_args: fn(&Args) -> Result<()>,
    /// Decode a result through the method's result type at an API version; the error says why
    /// the director would not take it.
    pub decode_result: fn(u32, &Value) -> std::result::Result<(), String>,
}

impl MethodDef {
    pub const fn of<M: Method>() -> MethodDef {
        MethodDef {
            name: M::NAME,
            args: M::SPEC,
            decode_args: decode_args::<M>,
            decode_result: decode_result::<M>,
        }
    }
}

fn decode_args<M: Method>(args: &Args) -> Result<()> {
    M::decode(args).map(drop)
}

fn decode_result<M: Method>(api_version: u32, value: &Value) -> std::result::Result<(), String> {
    let typed: M::Result = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    if !typed.accepted(api_version) {
        return Err(format!(
            "not a result the director takes at api_version {api_version}"
        ));
    }
    // Decoding must lose nothing: a value that only fits by dropping keys is not this type.
    let again = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if &again != value {
        return Err(format!("reads back as {again}"));
    }
    Ok(())
}

/// One struct per method, named after it; `METHODS` lists them all in the dispatch order.
macro_rules! methods {
    ($($(#[$doc:meta])* $method:literal => $name:ident { $($field:ident : $ty:ty),* $(,)? } -> $result:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone)]
            pub struct $name { $(pub $field: $ty),* }

            impl Method for $name {
                const NAME: &'static str = $method;
                const SPEC: &'static [Arg] =
                    &[$(Arg::new(stringify!($field), <$ty as FromArg>::TYPE)),*];
                type Result = $result;

                #[allow(unused_variables, unused_mut, unused_assignments)]
                fn decode(args: &Args) -> Result<Self> {
                    let mut i = 0;
                    Ok($name {$($field: {
                        let v = <$ty as FromArg>::from_arg(args, i)?;
                        i += 1;
                        v
                    }),*})
                }
            }
        )*

        /// Every method, in the order the dispatch table lists them.
        pub static METHODS: &[MethodDef] = &[$(MethodDef::of::<$name>()),*];
    };
}

methods! {
    "info" => Info {} -> CpiInfo;
    "ping" => Ping {} -> Pong;
    "create_stemcell" => CreateStemcell { image_path: String, cloud_properties: Map<String, Value> }
        -> String;
    "delete_stemcell" => DeleteStemcell { stemcell_cid: String } -> ();
    "create_vm" => CreateVm {
        agent_id: String,
        stemcell_cid: String,
        cloud_properties: Map<String, Value>,
        networks: Map<String, Value>,
        disk_cids: Vec<String>,
        env: Map<String, Value>,
    } -> VmCreated;
    "delete_vm" => DeleteVm { vm_cid: String } -> ();
    "has_vm" => HasVm { vm_cid: String } -> bool;
    "reboot_vm" => RebootVm { vm_cid: String } -> ();
    "set_vm_metadata" => SetVmMetadata { vm_cid: String, metadata: Map<String, Value> } -> ();
    /// Answers cloud_properties that ask for a machine at least this big.
    "calculate_vm_cloud_properties" => CalculateVmCloudProperties {
        desired_instance_size: Typed<DesiredInstanceSize>,
    } -> Map<String, Value>;
    "create_disk" => CreateDisk { size: u64, cloud_properties: Map<String, Value>, vm_cid: Option<String> }
        -> String;
    "delete_disk" => DeleteDisk { disk_cid: String } -> ();
    "has_disk" => HasDisk { disk_cid: String } -> bool;
    "attach_disk" => AttachDisk { vm_cid: String, disk_cid: String } -> Option<DiskHint>;
    "detach_disk" => DetachDisk { vm_cid: String, disk_cid: String } -> ();
    "set_disk_metadata" => SetDiskMetadata { disk_cid: String, metadata: Map<String, Value> } -> ();
    /// Answers the cids of the disks attached to the VM.
    "get_disks" => GetDisks { vm_cid: String } -> Vec<String>;
    "resize_disk" => ResizeDisk { disk_cid: String, new_size: u64 } -> ();
    /// Answers the new disk's cid, or null when the disk was changed in place.
    "update_disk" => UpdateDisk { disk_cid: String, new_size: u64, cloud_properties: Map<String, Value> }
        -> Option<String>;
    /// Answers the snapshot's cid.
    "snapshot_disk" => SnapshotDisk { disk_cid: String, metadata: Map<String, Value> } -> String;
    "delete_snapshot" => DeleteSnapshot { snapshot_cid: String } -> ();
    "create_network" => CreateNetwork { network_definition: Map<String, Value> } -> NetworkCreated;
    "delete_network" => DeleteNetwork { network_cid: String } -> ();
    /// Deprecated: answers the cid of the VM the director runs on.
    "current_vm_id" => CurrentVmId {} -> String;
    /// Removed from the v1 API; kept so the director gets a clear refusal.
    "configure_networks" => ConfigureNetworks { vm_cid: String, networks: Map<String, Value> } -> ();
}

/// `calculate_vm_cloud_properties`'s argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredInstanceSize {
    pub cpu: u64,
    /// MiB
    pub ram: u64,
    /// MiB
    pub ephemeral_disk_size: u64,
}

/// `info`'s answer. The director refuses a CPI without `stemcell_formats`, and one that reports
/// an API older than 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpiInfo {
    pub api_version: u32,
    pub stemcell_formats: Vec<String>,
}

impl Reply for CpiInfo {
    fn accepted(&self, _api_version: u32) -> bool {
        self.api_version >= 2 && !self.stemcell_formats.is_empty()
    }
}

/// `ping`'s answer, the string `"pong"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Pong {
    #[serde(rename = "pong")]
    Pong,
}

impl Reply for Pong {}

/// `create_vm`'s answer: the cid at API v1, `[cid, networks]` at v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VmCreated {
    Cid(String),
    WithNetworks(String, Map<String, Value>),
}

impl Reply for VmCreated {
    fn accepted(&self, api_version: u32) -> bool {
        match self {
            VmCreated::Cid(cid) => api_version < 2 && !cid.is_empty(),
            VmCreated::WithNetworks(cid, _) => api_version >= 2 && !cid.is_empty(),
        }
    }
}

/// Where the agent finds an attached disk (API v2): a device path, or an object such as
/// `{"path": "/dev/sdc"}`. The director refuses an empty one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DiskHint {
    Device(String),
    Settings(Map<String, Value>),
}

impl DiskHint {
    /// `{"path": device}`, the hint the agent resolves by device path.
    pub fn path(device: &str) -> DiskHint {
        let mut m = Map::new();
        m.insert("path".into(), Value::String(device.to_string()));
        DiskHint::Settings(m)
    }
}

/// `attach_disk`'s answer: nothing at API v1 (the registry tells the agent), a hint at v2.
impl Reply for Option<DiskHint> {
    fn accepted(&self, api_version: u32) -> bool {
        match self {
            None => api_version < 2,
            Some(DiskHint::Device(d)) => api_version >= 2 && !d.is_empty(),
            Some(DiskHint::Settings(m)) => api_version >= 2 && !m.is_empty(),
        }
    }
}

/// `create_network`'s answer: `[network_cid, addresses, cloud_properties]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkCreated(pub String, pub Value, pub Map<String, Value>);

impl Reply for NetworkCreated {}

/// A cid: never empty.
impl Reply for String {
    fn accepted(&self, _api_version: u32) -> bool {
        !self.is_empty()
    }
}

/// `update_disk`: a new cid, or null when the disk was changed in place.
impl Reply for Option<String> {
    fn accepted(&self, _api_version: u32) -> bool {
        self.as_ref().is_none_or(|s| !s.is_empty())
    }
}

/// The methods that answer null.
impl Reply for () {}

impl Reply for bool {}

/// get_disks: a list of cids (`[]`, never null).
impl Reply for Vec<String> {}

/// calculate_vm_cloud_properties: cloud_properties.
impl Reply for Map<String, Value> {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_in_order_and_names_the_argument() {
        let values = vec![json!("vm-1"), json!(null)];
        let a = Args::new("set_vm_metadata", SetVmMetadata::SPEC, &values);
        let d = SetVmMetadata::decode(&a).unwrap();
        assert_eq!(d.vm_cid, "vm-1");
        assert!(d.metadata.is_empty(), "null is an empty object");

        let values = vec![json!(1024), json!({}), json!(5)];
        let a = Args::new("create_disk", CreateDisk::SPEC, &values);
        let e = CreateDisk::decode(&a).unwrap_err();
        assert!(e.message.contains("argument 3 'vm_cid'"), "{}", e.message);

        let values = vec![json!({"cpu": 2, "ram": "x", "ephemeral_disk_size": 1})];
        let a = Args::new(
            "calculate_vm_cloud_properties",
            CalculateVmCloudProperties::SPEC,
            &values,
        );
        let e = CalculateVmCloudProperties::decode(&a).unwrap_err();
        assert!(
            e.message.contains("'desired_instance_size' at 'ram'"),
            "{}",
            e.message
        );
        assert_eq!(CreateVm::SPEC.len(), 6);
        assert_eq!(CreateVm::SPEC[4].name, "disk_cids");
    }

    #[test]
    fn results_are_checked_against_the_api_version() {
        let check = |m: &str, api: u32, v: Value| {
            let def = METHODS.iter().find(|d| d.name == m).unwrap();
            (def.decode_result)(api, &v)
        };
        assert!(check("create_vm", 1, json!("vm-1")).is_ok());
        assert!(
            check("create_vm", 2, json!("vm-1")).is_err(),
            "v2 is an array"
        );
        assert!(check("create_vm", 2, json!(["vm-1", {}])).is_ok());
        assert!(check("create_vm", 1, json!(["vm-1", {}])).is_err());
        assert!(check("attach_disk", 1, json!(null)).is_ok());
        assert!(
            check("attach_disk", 2, json!(null)).is_err(),
            "no disk hint"
        );
        assert!(
            check("attach_disk", 2, json!({})).is_err(),
            "empty disk hint"
        );
        assert!(check("attach_disk", 2, json!({"path": "/dev/sdc"})).is_ok());
        assert!(check("attach_disk", 2, json!("/dev/sdc")).is_ok());
        assert!(check("info", 1, json!({"api_version": 2})).is_err());
        assert!(check(
            "info",
            1,
            json!({"api_version": 2, "stemcell_formats": ["x"], "y": 1})
        )
        .is_err());
        assert!(check("ping", 1, json!("pong")).is_ok());
        assert!(check("ping", 1, json!("ping")).is_err());
        assert!(check("delete_vm", 2, json!(null)).is_ok());
        assert!(check("delete_vm", 2, json!(true)).is_err());
        assert!(check("get_disks", 2, json!(null)).is_err(), "[] not null");
        assert!(check("create_network", 2, json!(["n", [], {}])).is_ok());
        assert!(check("create_network", 2, json!(["n", []])).is_err());
        assert_eq!(
            DiskHint::path("/dev/sdc"),
            serde_json::from_value(json!({"path": "/dev/sdc"})).unwrap()
        );
    }
}
