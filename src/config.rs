//! The CPI's configuration: one JSON file, rendered by the BOSH job template with `JSON.dump`.
//!
//! Every key and its default is documented in `docs/configuration.md`; keep the two in step.
//! Unknown keys are refused so that a typo in a manifest property is reported instead of silently
//! falling back to a default.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CpiError, Result};

pub use ironic_client::config::{
    parse_microversion, IronicAuth, IronicConfig, MicroversionPolicy, PollPolicy, RetryPolicy,
    Timeouts, DEFAULT_MAX_RESPONSE_BYTES, LOWEST_MICROVERSION, MIN_MAX_RESPONSE_BYTES,
};
pub use ironic_cpi_common::{Seconds, Secret};

/// Context keys that belong to the director, not to the CPI's configuration.
pub use bosh_cpi_protocol::request::RESERVED_CONTEXT_KEYS;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ironic: IronicConfig,
    #[serde(default)]
    pub stemcell_repository: Option<RepositoryConfig>,
    #[serde(default)]
    pub metadata_repository: Option<RepositoryConfig>,
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub defaults: Defaults,
}

/// A WebDAV location (the companion server or nginx) for stemcells or config drives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Collection URL the CPI reads and writes, e.g. `http://10.0.0.2:25780/images`.
    pub url: String,
    /// URL Ironic's conductors download from, when they reach the repository by another address.
    /// Defaults to `url`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub ca_cert_file: Option<String>,
    /// Seconds for one request; uploads of large stemcells use it per chunk of progress.
    #[serde(default = "default_repository_timeout")]
    pub timeout: Seconds,
}

impl RepositoryConfig {
    pub fn public_base(&self) -> &str {
        self.public_url.as_deref().unwrap_or(&self.url)
    }
}

/// The legacy BOSH registry, for stemcells whose agent predates registry-less settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry base URL as the CPI reaches it (the agent appends `/instances/<id>/settings`).
    pub endpoint: String,
    /// Endpoint written into user data for agents, when they reach it by another address (no
    /// credentials in it: each agent gets its own, see `agent_credentials`).
    #[serde(default)]
    pub agent_endpoint: Option<String>,
    /// The CPI's user (a write user of the companion server).
    pub username: String,
    pub password: Secret,
    /// How an agent authenticates when it reads its settings.
    #[serde(default)]
    pub agent_credentials: AgentCredentials,
    #[serde(default)]
    pub ca_cert_file: Option<String>,
}

/// How an agent of a registry-era stemcell proves which VM it is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AgentCredentials {
    /// A random secret per VM, only in that VM's config drive (as `<vm id>:<secret>@` in the
    /// registry endpoint); the companion server gets its SHA-256 with the settings and lets that
    /// secret read those settings only.
    #[default]
    PerVm,
    /// No credentials in the endpoint, for a registry that tells VMs apart by other means (the
    /// Ruby bosh-registry's source-address check).
    None,
}

/// What every agent needs to reach the director, as other CPIs name it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Message bus URL (e.g. `nats://nats:pw@10.0.0.6:4222`, or `https://mbus:pw@0.0.0.0:6868` for create-env).
    #[serde(default)]
    pub mbus: Option<Secret>,
    #[serde(default)]
    pub ntp: Vec<String>,
    #[serde(default)]
    pub blobstore: Option<Value>,
}

/// Disk devices on the nodes. Bare metal has no hypervisor to name them, so operators set them
/// per pool (and per vm_type with `cloud_properties`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Root device the stemcell image is written to; `disks.system` in agent settings.
    #[serde(default = "default_system_disk")]
    pub system_disk: String,
    /// `disks.ephemeral` in agent settings. With null the agent carves ephemeral space after the
    /// root disk's last partition, which Ironic's config drive partition takes (docs/hwlab.md).
    #[serde(default)]
    pub ephemeral_disk: Option<String>,
    /// Device of persistent disks when the disk type does not name one.
    #[serde(default = "default_persistent_disk")]
    pub persistent_disk_device: String,
    /// What to do with node NICs that no BOSH network uses.
    #[serde(default)]
    pub unused_nic_policy: UnusedNicPolicy,
    /// Config drives (gzipped, base64) up to this many bytes go inline to Ironic; larger ones are published
    /// to the metadata repository and passed by URL (Ironic stores inline drives in its database,
    /// which holds 64 KiB).
    #[serde(default = "default_inline_configdrive_max")]
    pub configdrive_inline_max_bytes: usize,
    /// Also publish the plain files of each config drive to the metadata repository, for people.
    #[serde(default)]
    pub publish_configdrive_files: bool,
    /// Always publish the gzipped config drive to the metadata repository (still sent inline when small).
    #[serde(default)]
    pub publish_configdrive: bool,
    /// The node field that a BOSH availability zone (`cloud_properties.availability_zone`) selects on.
    #[serde(default = "default_az_field")]
    pub availability_zone_field: String,
    /// `public-keys` for the config drive meta data (the agent installs key "0" for vcap).
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// Write `preconfigured: true` on networks (the agent then leaves interfaces alone).
    #[serde(default)]
    pub networks_preconfigured: bool,
}

impl Default for Defaults {
    #[expect(
        clippy::expect_used,
        reason = "every field has a serde default: tests/fuzz_config and the unit tests read {}"
    )]
    fn default() -> Self {
        serde_json::from_value(Value::Object(Map::new())).expect("defaults deserialize from {}")
    }
}

/// NICs no BOSH network uses. Every agent since 2015 (v2.477.0 and the registry-less ones alike)
/// configures such a NIC with DHCP by itself (`interface_configuration_creator.go`: the NIC gets
/// the zero network, which means DHCP; current agents add `UseRoutes=no` when another network
/// is the default gateway), so by default nothing is written for them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnusedNicPolicy {
    /// A manual network with a loopback host address (127.0.0.100/32, .101/32, ...), as the
    /// original CPI wrote (then with /24): keeps the agent from running DHCP on the NIC.
    Loopback,
    /// A dynamic network: what the agent does anyway, written out.
    Dhcp,
    /// Leave the NIC out of the settings; the agent gives it DHCP by itself.
    #[default]
    None,
}

fn default_repository_timeout() -> Seconds {
    Seconds::from_secs(300)
}
fn default_system_disk() -> String {
    "/dev/sda".into()
}
fn default_persistent_disk() -> String {
    "/dev/sdc".into()
}
fn default_inline_configdrive_max() -> usize {
    60 * 1024
}
fn default_az_field() -> String {
    "conductor_group".into()
}

impl Config {
    /// Read the config file, lay the context's cpi-config properties over it, and check it.
    pub fn load(path: &Path, context_overrides: &Map<String, Value>) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CpiError::cpi(format!(
                "cannot read the CPI config file {}: {e}",
                path.display()
            ))
            .because(e)
        })?;
        let mut value: Value = serde_json::from_str(&text).map_err(|e| {
            CpiError::cpi(format!(
                "the CPI config file {} is not valid JSON: {e}",
                path.display()
            ))
        })?;
        overlay(&mut value, context_overrides);
        let mut config = Config::from_value(value)
            .map_err(|e| e.context(format!("CPI config {}", path.display())))?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    /// CA files given relative to the config file are found next to it, wherever the CPI runs
    /// from (the director's working directory is not the job's).
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut Option<String>| {
            if let Some(file) = p {
                if Path::new(file.as_str()).is_relative() {
                    *file = dir.join(file.as_str()).to_string_lossy().into_owned();
                }
            }
        };
        resolve(&mut self.ironic.ca_cert_file);
        for repo in [&mut self.stemcell_repository, &mut self.metadata_repository]
            .into_iter()
            .flatten()
        {
            resolve(&mut repo.ca_cert_file);
        }
        if let Some(registry) = &mut self.registry {
            resolve(&mut registry.ca_cert_file);
        }
    }

    /// Parse and validate a config document; errors name the offending key.
    pub fn from_value(value: Value) -> Result<Config> {
        if !value.is_object() {
            return Err(CpiError::cpi("the config must be a JSON object"));
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            // serde quotes the value it refused, and a password may be that value.
            let inner = crate::redact::serde_message(&e.into_inner().to_string());
            if path == "." {
                CpiError::cpi(inner)
            } else {
                CpiError::cpi(format!("key '{path}': {inner}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(CpiError::cpi(format!("key '{key}': {why}")));
        let url = self.ironic.url.trim();
        let keystone_auth_url = match &self.ironic.auth {
            IronicAuth::KeystonePassword { auth_url, .. }
            | IronicAuth::KeystoneApplicationCredential { auth_url, .. } => Some(auth_url),
            _ => None,
        };
        if let Some(auth_url) = keystone_auth_url {
            check_url("ironic.auth.auth_url", auth_url)?;
        }
        if url.is_empty() {
            // With Keystone the baremetal endpoint can come from the service catalog.
            if keystone_auth_url.is_none() {
                return bad(
                    "ironic.url",
                    "must not be empty (only Keystone auth can find Ironic in its catalog)",
                );
            }
        } else {
            check_url("ironic.url", url)?;
        }
        if !(self.ironic.poll.factor.is_finite() && self.ironic.poll.factor >= 1.0) {
            return bad("ironic.poll.factor", "must be a number >= 1");
        }
        if !(0.0..=1.0).contains(&self.ironic.poll.jitter) {
            return bad("ironic.poll.jitter", "must be between 0 and 1");
        }
        if self.ironic.retry.max_attempts == 0 {
            return bad("ironic.retry.max_attempts", "must be at least 1");
        }
        if self.ironic.page_size == 0 {
            return bad("ironic.page_size", "must be at least 1");
        }
        if self.ironic.max_response_bytes < MIN_MAX_RESPONSE_BYTES {
            return bad(
                "ironic.max_response_bytes",
                &format!("must be at least {MIN_MAX_RESPONSE_BYTES} (64 KiB)"),
            );
        }
        for (key, v) in [
            ("ironic.microversion.min", &self.ironic.microversion.min),
            ("ironic.microversion.max", &self.ironic.microversion.max),
        ] {
            if parse_microversion(v).is_none() {
                return bad(key, "must look like \"1.52\"");
            }
        }
        // A YAML manifest turns an unquoted 1.60 into the number 1.6, which reads as 1.6 here:
        // refusing it now beats a 406 from Ironic at the first call.
        let (min, max) = (&self.ironic.microversion.min, &self.ironic.microversion.max);
        let lowest = LOWEST_MICROVERSION;
        if parse_microversion(min) < parse_microversion(lowest) {
            return bad(
                "ironic.microversion.min",
                &format!(
                    "{min} is below {lowest}, the lowest this CPI works with (in YAML, quote \
                     microversions: an unquoted 1.60 is the number 1.6)"
                ),
            );
        }
        if parse_microversion(min) > parse_microversion(max) {
            return bad(
                "ironic.microversion.max",
                &format!(
                    "{max} is below ironic.microversion.min {min} (in YAML, quote \
                     microversions: an unquoted 1.60 is the number 1.6)"
                ),
            );
        }
        for (key, repo) in [
            ("stemcell_repository", &self.stemcell_repository),
            ("metadata_repository", &self.metadata_repository),
        ] {
            if let Some(repo) = repo {
                check_url(&format!("{key}.url"), &repo.url)?;
                if let Some(public) = &repo.public_url {
                    check_url(&format!("{key}.public_url"), public)?;
                }
                if repo.password.is_some() && repo.username.is_none() {
                    return bad(&format!("{key}.username"), "is required with a password");
                }
            }
        }
        if let Some(registry) = &self.registry {
            check_url("registry.endpoint", &registry.endpoint)?;
            if has_userinfo(&registry.endpoint) {
                return bad(
                    "registry.endpoint",
                    "must not carry user:password@ (use registry.username and registry.password)",
                );
            }
            if let Some(agent) = &registry.agent_endpoint {
                check_url("registry.agent_endpoint", agent)?;
                if has_userinfo(agent) {
                    return bad(
                        "registry.agent_endpoint",
                        "must not carry user:password@: they would be on every node; each agent \
                         gets credentials of its own (registry.agent_credentials)",
                    );
                }
            }
        }
        if let Some(blobstore) = &self.agent.blobstore {
            if !blobstore.is_object() {
                return bad(
                    "agent.blobstore",
                    "must be an object with provider and options",
                );
            }
        }
        if !self.defaults.system_disk.starts_with('/') {
            return bad(
                "defaults.system_disk",
                "must be a device path like /dev/sda",
            );
        }
        if !self.defaults.persistent_disk_device.starts_with('/') {
            return bad(
                "defaults.persistent_disk_device",
                "must be a device path like /dev/sdc",
            );
        }
        if self.defaults.availability_zone_field.is_empty() {
            return bad("defaults.availability_zone_field", "must not be empty");
        }
        Ok(())
    }
}

fn check_url(key: &str, s: &str) -> Result<()> {
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(CpiError::cpi(format!(
            "key '{key}': scheme '{}' is not http or https",
            u.scheme()
        ))),
        Err(e) => Err(CpiError::cpi(format!("key '{key}': not a URL ({e})"))),
    }
}

fn has_userinfo(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

/// Deep-merge `overrides` into `base`: objects merge key by key, anything else replaces.
pub fn overlay(base: &mut Value, overrides: &Map<String, Value>) {
    let Value::Object(base_map) = base else {
        return;
    };
    for (key, value) in overrides {
        match (base_map.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(inner)) => overlay(existing, inner),
            _ => {
                base_map.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn minimal() -> Value {
        json!({"ironic": {"url": "http://127.0.0.1:6385"}})
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_value(minimal()).unwrap();
        assert_eq!(c.ironic.auth, IronicAuth::None);
        assert_eq!(c.ironic.microversion.min, "1.52");
        assert_eq!(c.ironic.timeouts.deploy.get(), Duration::from_secs(3600));
        assert_eq!(c.defaults.system_disk, "/dev/sda");
        assert_eq!(c.defaults.persistent_disk_device, "/dev/sdc");
        assert_eq!(c.defaults.unused_nic_policy, UnusedNicPolicy::None);
        assert_eq!(c.defaults.configdrive_inline_max_bytes, 61440);
        assert!(c.registry.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let mut v = minimal();
        v["ironic"]["timeouts"] = json!({"deploy": "soon"});
        let e = Config::from_value(v).unwrap_err();
        assert!(
            e.message.contains("ironic.timeouts.deploy"),
            "{}",
            e.message
        );

        let mut v = minimal();
        v["ironic"]["urll"] = json!("x");
        let e = Config::from_value(v).unwrap_err();
        assert!(e.message.contains("urll"), "{}", e.message);

        let e = Config::from_value(json!({})).unwrap_err();
        assert!(e.message.contains("ironic"), "{}", e.message);

        let e = Config::from_value(json!({"ironic": {"url": ""}})).unwrap_err();
        assert!(e.message.contains("ironic.url"), "{}", e.message);
        Config::from_value(json!({"ironic": {"url": "", "auth": {"type": "keystone_password",
            "auth_url": "http://k:5000/v3", "username": "u", "password": "p", "project_name": "bm"}}}))
        .expect("Keystone finds the endpoint in its catalog");

        let mut v = minimal();
        v["ironic"]["url"] = json!("ftp://x");
        let e = Config::from_value(v).unwrap_err();
        assert!(e.message.contains("ironic.url"), "{}", e.message);

        let mut v = minimal();
        v["ironic"]["auth"] = json!({"type": "http_basic", "username": "u"});
        let e = Config::from_value(v).unwrap_err();
        assert!(e.message.contains("ironic.auth"), "{}", e.message);
        assert!(e.message.contains("password"), "{}", e.message);
    }

    #[test]
    fn microversions_below_the_floor_or_inverted_are_refused() {
        let with = |min: &str, max: &str| {
            let mut v = minimal();
            v["ironic"]["microversion"] = json!({"min": min, "max": max});
            Config::from_value(v)
        };
        // What an unquoted `min: 1.60` in a manifest becomes.
        let e = with("1.6", "1.115").unwrap_err();
        assert!(
            e.message.contains("ironic.microversion.min"),
            "{}",
            e.message
        );
        assert!(e.message.contains("1.52"), "{}", e.message);
        assert!(e.message.contains("quote"), "{}", e.message);
        let e = with("1.60", "1.6").unwrap_err();
        assert!(
            e.message.contains("ironic.microversion.max"),
            "{}",
            e.message
        );
        assert!(e.message.contains("below"), "{}", e.message);
        with("1.52", "1.52").expect("the floor itself");
        with("1.60", "1.100").expect("1.100 is above 1.60");
    }

    #[test]
    fn context_overrides_merge_deeply() {
        let mut v = minimal();
        v["ironic"]["page_size"] = json!(50);
        let over = json!({"ironic": {"url": "http://other:6385"}, "agent": {"mbus": "nats://x"}});
        overlay(&mut v, over.as_object().unwrap());
        let c = Config::from_value(v).unwrap();
        assert_eq!(c.ironic.url, "http://other:6385");
        assert_eq!(c.ironic.page_size, 50);
        assert_eq!(c.agent.mbus.as_ref().map(Secret::expose), Some("nats://x"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut v = minimal();
        v["ironic"]["auth"] = json!({"type": "http_basic", "username": "u", "password": "hunter2"});
        v["registry"] = json!({"endpoint": "http://r:25777", "username": "r", "password": "regpw"});
        let c = Config::from_value(v).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("regpw"),
            "{shown}"
        );
    }

    #[test]
    fn errors_never_show_the_values_they_refuse() {
        let mut v = minimal();
        v["registry"] =
            json!({"endpoint": "http://r:25777", "username": "r", "password": 98765432101u64});
        let e = Config::from_value(v).unwrap_err();
        assert!(e.message.contains("registry.password"), "{}", e.message);
        assert!(!e.message.contains("98765432101"), "{}", e.message);
        let mut v = minimal();
        v["ironic"]["auth"] = json!({"type": "S3cretVariant", "password": "x"});
        let e = Config::from_value(v).unwrap_err();
        assert!(!e.message.contains("S3cretVariant"), "{}", e.message);
    }

    #[test]
    fn registry_endpoints_carry_no_credentials_and_agents_get_their_own() {
        let mut v = minimal();
        v["registry"] = json!({"endpoint": "http://r:25777", "username": "r", "password": "p"});
        let c = Config::from_value(v.clone()).unwrap();
        assert_eq!(
            c.registry.unwrap().agent_credentials,
            AgentCredentials::PerVm
        );
        for key in ["endpoint", "agent_endpoint"] {
            let mut bad = v.clone();
            bad["registry"][key] = json!("http://agent:S3cret-pw@r:25777/registry");
            let e = Config::from_value(bad).unwrap_err();
            assert!(
                e.message.contains(&format!("registry.{key}")),
                "{}",
                e.message
            );
            assert!(!e.message.contains("S3cret-pw"), "{}", e.message);
        }
        v["registry"]["embed_credentials_for_agent"] = json!(true);
        let e = Config::from_value(v).unwrap_err();
        assert!(
            e.message.contains("embed_credentials_for_agent"),
            "{}",
            e.message
        );
    }

    #[test]
    fn relative_ca_files_are_next_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpi.json");
        let doc = json!({"ironic": {"url": "http://127.0.0.1:6385", "ca_cert_file": "cacert.pem"},
            "registry": {"endpoint": "http://r:1", "username": "u", "password": "p",
                         "ca_cert_file": "/etc/ssl/reg.pem"}});
        std::fs::write(&path, doc.to_string()).unwrap();
        let c = Config::load(&path, &Map::new()).unwrap();
        assert_eq!(
            c.ironic.ca_cert_file.as_deref(),
            Some(dir.path().join("cacert.pem").to_str().unwrap())
        );
        assert_eq!(
            c.registry.unwrap().ca_cert_file.as_deref(),
            Some("/etc/ssl/reg.pem")
        );
    }

    #[test]
    fn auth_modes_parse() {
        for auth in [
            json!({"type": "none"}),
            json!({"type": "http_basic", "username": "u", "password": "p"}),
            json!({"type": "token", "token": "t"}),
            json!({"type": "keystone_password", "auth_url": "http://k:5000/v3", "username": "u",
                   "password": "p", "project_name": "bm"}),
            json!({"type": "keystone_application_credential", "auth_url": "http://k:5000/v3",
                   "application_credential_id": "i", "application_credential_secret": "s"}),
        ] {
            let mut v = minimal();
            v["ironic"]["auth"] = auth.clone();
            Config::from_value(v).unwrap_or_else(|e| panic!("{auth}: {e}"));
        }
    }
}
