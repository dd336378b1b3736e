//! The config drive a node boots its BOSH agent from.
//!
//! The agent on OpenStack stemcells reads `ec2/latest/user-data` and `ec2/latest/meta-data.json`
//! from a volume labelled `config-2` (contract §4); Ironic's own builder writes only
//! `openstack/<version>/`, so the CPI builds the whole image here and hands Ironic the gzipped,
//! base64-encoded ISO (or publishes it and passes a URL when it is too big to inline).
//!
//! The drive carries secrets the agent needs (VM password, mbus client key, mbus URL with
//! credentials). Nothing here logs contents, and `Debug` shows only names and sizes; use
//! [`redacted`] to show settings or user data to a person.

pub mod check;
mod iso;
mod networks;
mod settings;
mod userdata;

use serde_json::{Map, Value};

use crate::config::{AgentConfig, Defaults};
use crate::error::{CpiError, Result};

pub use crate::mac::normalize_mac;
pub use iso::VOLUME_ID;
pub use networks::{check_networks, map_networks, NetworkKind, NetworkMapping};
pub use settings::{redacted, DiskLayout};

/// Paths on the drive. The agent reads only the `ec2/` pair; the `openstack/` files are for any
/// other reader (cloud-init, glean, people).
pub const EC2_META_DATA: &str = "ec2/latest/meta-data.json";
pub const EC2_USER_DATA: &str = "ec2/latest/user-data";
pub const OPENSTACK_META_DATA: &str = "openstack/latest/meta_data.json";
pub const OPENSTACK_USER_DATA: &str = "openstack/latest/user_data";
pub const OPENSTACK_NETWORK_DATA: &str = "openstack/latest/network_data.json";

/// Everything one VM's drive is made of.
pub struct DriveInput<'a> {
    pub agent_id: &'a str,
    /// `instance-id`, and the agent's `server.name` / `vm.name` (the registry key).
    pub node_uuid: &'a str,
    /// All the node's port MACs as Ironic gives them.
    pub node_macs: &'a [String],
    /// The MACs of the ports Ironic has `pxe_enabled`: the default network goes there first.
    pub pxe_macs: &'a [String],
    /// The director's networks hash (create_vm argument 4).
    pub networks: &'a Map<String, Value>,
    /// create_vm argument 6, copied verbatim.
    pub env: &'a Value,
    pub agent: &'a AgentConfig,
    pub defaults: &'a Defaults,
    /// This VM's disk devices.
    pub disks: &'a DiskLayout,
    /// disk_cid -> hint; usually empty.
    pub persistent_disks: &'a Map<String, Value>,
    /// `Some(endpoint)` selects registry mode; the caller decides whether it carries credentials.
    /// The agent then fetches `<endpoint>/instances/<node_uuid>/settings`: PUT
    /// [`ConfigDrive::settings`] there.
    pub registry_endpoint: Option<&'a str>,
}

/// A built drive: its documents, the image, and what the director and registry need from it.
#[derive(Clone)]
pub struct ConfigDrive {
    settings: Value,
    networks: Map<String, Value>,
    files: Vec<(String, Vec<u8>)>,
    iso: Vec<u8>,
    gzipped: Vec<u8>,
}

impl ConfigDrive {
    /// The full agent settings (what the registry stores in registry mode).
    pub fn settings(&self) -> &Value {
        &self.settings
    }

    /// The director's networks with `mac` filled in, no placeholders: create_vm's v2 result.
    pub fn networks(&self) -> &Map<String, Value> {
        &self.networks
    }

    /// The plain files, path -> content, for optional publishing. The user data holds the
    /// agent's secrets (env, mbus URL): publish it only where the drive itself may go.
    pub fn files(&self) -> &[(String, Vec<u8>)] {
        &self.files
    }

    /// One file's content by its path on the drive.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_slice())
    }

    pub fn iso(&self) -> &[u8] {
        &self.iso
    }

    pub fn gzipped(&self) -> &[u8] {
        &self.gzipped
    }

    /// Size of the gzipped image, to compare with `Defaults::configdrive_inline_max_bytes`.
    pub fn gzipped_size(&self) -> usize {
        self.gzipped.len()
    }

    /// Length of [`ConfigDrive::to_base64`] without building it (what Ironic stores inline).
    pub fn base64_len(&self) -> usize {
        self.gzipped.len().div_ceil(3) * 4
    }

    /// What Ironic's `configdrive` field takes: gzip, then base64 on one line.
    pub fn to_base64(&self) -> String {
        iso::base64(&self.gzipped)
    }
}

impl std::fmt::Debug for ConfigDrive {
    /// Names and sizes only: the contents hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<(&str, usize)> = self
            .files
            .iter()
            .map(|(p, c)| (p.as_str(), c.len()))
            .collect();
        f.debug_struct("ConfigDrive")
            .field("networks", &self.networks.keys().collect::<Vec<_>>())
            .field("files", &files)
            .field("iso_bytes", &self.iso.len())
            .field("gzipped_bytes", &self.gzipped.len())
            .finish()
    }
}

/// Build the drive for one VM.
///
/// Errors: `CloudError` when networks and NICs do not fit together (naming network, node and
/// MACs) or a network's addressing is inconsistent; `CpiError` for malformed arguments.
pub fn build(input: &DriveInput) -> Result<ConfigDrive> {
    // An empty agent_id makes registry-era agents ignore inline settings and an empty
    // server.name or endpoint sends them to a registry path that cannot exist: refuse now.
    for (what, value) in [
        ("agent_id", Some(input.agent_id)),
        ("node uuid", Some(input.node_uuid)),
        ("registry endpoint", input.registry_endpoint),
    ] {
        if value.is_some_and(|v| v.trim().is_empty()) {
            return Err(CpiError::cpi(format!(
                "cannot build a config drive with an empty {what}"
            )));
        }
    }
    let mapping = map_networks(
        input.node_uuid,
        input.node_macs,
        input.pxe_macs,
        input.networks,
        input.defaults.unused_nic_policy,
        input.defaults.networks_preconfigured,
    )?;
    let settings = settings::agent_settings(&settings::SettingsParts {
        agent_id: input.agent_id,
        vm_name: input.node_uuid,
        networks: &mapping.agent,
        env: input.env,
        agent: input.agent,
        disks: input.disks,
        persistent_disks: input.persistent_disks,
    })?;
    let nameservers = userdata::nameservers(&mapping.agent)?;
    let user_data = userdata::user_data(
        &settings,
        input.node_uuid,
        &nameservers,
        input.registry_endpoint,
    );
    let ec2_meta = userdata::ec2_meta_data(input.node_uuid, &input.defaults.public_keys);
    let os_meta = userdata::openstack_meta_data(input.node_uuid, &input.defaults.public_keys);
    let network_data = userdata::network_data(
        &mapping.node_macs,
        &mapping.agent,
        &mapping.director,
        &nameservers,
    )?;

    let user_data = to_bytes(&user_data);
    let files = vec![
        (EC2_META_DATA.to_string(), to_bytes(&ec2_meta)),
        (EC2_USER_DATA.to_string(), user_data.clone()),
        (OPENSTACK_META_DATA.to_string(), to_bytes(&os_meta)),
        (OPENSTACK_NETWORK_DATA.to_string(), to_bytes(&network_data)),
        (OPENSTACK_USER_DATA.to_string(), user_data),
    ];
    let iso = iso::write_iso(&files)?;
    let gzipped = iso::gzip(&iso)?;
    log::debug!(
        "config drive for node {}: {} network(s) on {} NIC(s), ISO {} bytes, gzipped {} bytes",
        input.node_uuid,
        mapping.director.len(),
        mapping.node_macs.len(),
        iso.len(),
        gzipped.len()
    );
    Ok(ConfigDrive {
        settings,
        networks: mapping.director,
        files,
        iso,
        gzipped,
    })
}

/// Compact JSON: smaller drives, and the agent does not care about layout.
fn to_bytes(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(v).unwrap_or_default()
}
