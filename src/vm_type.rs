//! A vm_type's `cloud_properties` as this CPI reads them (merged by the director from the AZ,
//! the vm_type and the vm_extensions).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Defaults;
use crate::configdrive::DiskLayout;
use crate::error::{CpiError, Result};
use crate::mac::normalize_mac;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct VmCloudProperties {
    /// The node owning any of these MACs (and, with `ironic_params`, the node to enroll).
    pub macs: Vec<String>,
    /// Node `properties` a node must have: numbers at least as large, anything else equal.
    pub ironic_properties: Map<String, Value>,
    pub resource_class: Option<String>,
    /// Every one of these traits is required.
    pub traits: Vec<String>,
    /// Set by the AZ's cloud_properties; compared with the node field named by
    /// `defaults.availability_zone_field`.
    pub availability_zone: Option<String>,
    /// With `macs`: a node to enroll when no node owns those MACs (body of `POST /v1/nodes`).
    pub ironic_params: Option<Map<String, Value>>,
    /// Ironic root device hints (`instance_info.root_device`), e.g. `{"size": ">= 100"}`.
    pub root_device: Option<Map<String, Value>>,
    /// `instance_info.capabilities`, e.g. `{"boot_mode": "uefi"}`.
    pub capabilities: Option<Map<String, Value>>,
    /// Override `defaults.system_disk` for this vm_type.
    pub system_disk: Option<String>,
    /// Override `defaults.ephemeral_disk` for this vm_type.
    pub ephemeral_disk: Option<String>,
    /// Override `ironic.clean_on_delete` for this vm_type.
    pub clean_on_delete: Option<bool>,
}

/// Keys this CPI reads; anything else is logged (other CPIs' keys and typos alike), not refused.
pub const KNOWN_KEYS: [&str; 11] = [
    "macs",
    "ironic_properties",
    "resource_class",
    "traits",
    "availability_zone",
    "ironic_params",
    "root_device",
    "capabilities",
    "system_disk",
    "ephemeral_disk",
    "clean_on_delete",
];

impl VmCloudProperties {
    /// The vm_type's own disk devices over the config's defaults.
    pub fn disk_layout(&self, defaults: &Defaults) -> DiskLayout {
        let config = DiskLayout::from_defaults(defaults);
        DiskLayout {
            system: self.system_disk.clone().unwrap_or(config.system),
            ephemeral: self.ephemeral_disk.clone().or(config.ephemeral),
        }
    }

    pub fn parse(raw: &Map<String, Value>) -> Result<VmCloudProperties> {
        let unknown: Vec<&str> = raw
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            log::warn!(
                "cloud_properties keys not used by the Ironic CPI: {} (known: {})",
                unknown.join(", "),
                KNOWN_KEYS.join(", ")
            );
        }
        let mut props: VmCloudProperties =
            serde_path_to_error::deserialize(Value::Object(raw.clone())).map_err(|e| {
                let path = e.path().to_string();
                CpiError::cloud(format!(
                    "cloud_properties: key '{path}': {}",
                    crate::redact::serde_message(&e.into_inner().to_string())
                ))
            })?;
        props.macs = props
            .macs
            .iter()
            .map(|m| {
                normalize_mac(m).ok_or_else(|| {
                    CpiError::cloud(format!("cloud_properties.macs: '{m}' is not a MAC address"))
                })
            })
            .collect::<Result<_>>()?;
        if let Some(params) = &props.ironic_params {
            if props.macs.is_empty() {
                return Err(CpiError::cloud(
                    "cloud_properties.ironic_params needs cloud_properties.macs: \
                     the MACs say which machine to enroll and become its ports",
                ));
            }
            if !params.get("driver").is_some_and(Value::is_string) {
                return Err(CpiError::cloud(
                    "cloud_properties.ironic_params.driver is required (e.g. \"ipmi\", \"redfish\")",
                ));
            }
        }
        for (key, v) in &props.ironic_properties {
            if v.is_null() || v.is_array() || v.is_object() {
                return Err(CpiError::cloud(format!(
                    "cloud_properties.ironic_properties.{key} must be a number, string or boolean"
                )));
            }
        }
        for (key, dev) in [
            ("system_disk", &props.system_disk),
            ("ephemeral_disk", &props.ephemeral_disk),
        ] {
            if dev.as_deref().is_some_and(|d| !d.starts_with('/')) {
                return Err(CpiError::cloud(format!(
                    "cloud_properties.{key} must be a device path like /dev/sda"
                )));
            }
        }
        Ok(props)
    }

    /// Compact JSON of what selects a node, for messages.
    pub fn selector_summary(&self) -> String {
        let mut m = Map::new();
        if !self.macs.is_empty() {
            m.insert("macs".into(), self.macs.clone().into());
        }
        if !self.ironic_properties.is_empty() {
            m.insert(
                "ironic_properties".into(),
                Value::Object(self.ironic_properties.clone()),
            );
        }
        if let Some(rc) = &self.resource_class {
            m.insert("resource_class".into(), rc.clone().into());
        }
        if !self.traits.is_empty() {
            m.insert("traits".into(), self.traits.clone().into());
        }
        if let Some(az) = &self.availability_zone {
            m.insert("availability_zone".into(), az.clone().into());
        }
        Value::Object(m).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<VmCloudProperties> {
        VmCloudProperties::parse(v.as_object().unwrap())
    }

    #[test]
    fn the_vm_types_disks_override_the_configs_one_by_one() {
        let defaults = Defaults {
            system_disk: "/dev/sda".into(),
            ephemeral_disk: Some("/dev/sdb".into()),
            ..Defaults::default()
        };
        let own = parse(json!({"system_disk": "/dev/nvme0n1"})).unwrap();
        assert_eq!(
            own.disk_layout(&defaults),
            DiskLayout {
                system: "/dev/nvme0n1".into(),
                ephemeral: Some("/dev/sdb".into())
            }
        );
        let none = parse(json!({})).unwrap();
        assert_eq!(
            none.disk_layout(&defaults),
            DiskLayout::from_defaults(&defaults)
        );
        let eph = parse(json!({"ephemeral_disk": "/dev/sdc"})).unwrap();
        assert_eq!(
            eph.disk_layout(&Defaults::default()).ephemeral.as_deref(),
            Some("/dev/sdc")
        );
    }

    #[test]
    fn parses_selectors_and_normalises_macs() {
        let p = parse(
            json!({"macs": ["52-54-00-AA-BB-CC"], "resource_class": "bm",
            "traits": ["CUSTOM_X"], "ironic_properties": {"cpus": 4}, "instance_type": "x"}),
        )
        .unwrap();
        assert_eq!(p.macs, ["52:54:00:aa:bb:cc"]);
        assert_eq!(p.resource_class.as_deref(), Some("bm"));
    }

    #[test]
    fn bad_values_are_cloud_errors_naming_the_key() {
        let e = parse(json!({"traits": "CUSTOM_X"})).unwrap_err();
        assert!(e.message.contains("traits"), "{}", e.message);
        let e = parse(json!({"macs": ["zz"]})).unwrap_err();
        assert!(e.message.contains("zz"), "{}", e.message);
        let e = parse(json!({"ironic_params": {"driver": "ipmi"}})).unwrap_err();
        assert!(e.message.contains("macs"), "{}", e.message);
        let e = parse(json!({"macs": ["52:54:00:aa:bb:cc"], "ironic_params": {}})).unwrap_err();
        assert!(e.message.contains("driver"), "{}", e.message);
        let e = parse(json!({"ironic_properties": {"cpus": [4]}})).unwrap_err();
        assert!(e.message.contains("cpus"), "{}", e.message);
    }
}
