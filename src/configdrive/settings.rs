//! The agent's initial settings (`bosh-agent: settings/settings.go`), typed exactly as the Go
//! agent decodes them: one field of the wrong JSON type and the whole document is refused at
//! boot, long after create_vm has reported success.

use serde_json::{json, Map, Value};

use super::networks::json_type;
use crate::config::{AgentConfig, Defaults};
use crate::error::{CpiError, Result};

/// Everything the settings are made of, already checked by the network mapping.
pub struct SettingsParts<'a> {
    pub agent_id: &'a str,
    pub vm_name: &'a str,
    pub networks: &'a Map<String, Value>,
    pub env: &'a Value,
    pub agent: &'a AgentConfig,
    pub disks: &'a DiskLayout,
    pub persistent_disks: &'a Map<String, Value>,
}

/// Where one VM's agent finds its disks (`disks.system`, `disks.ephemeral` of its settings):
/// the config's defaults, or the vm_type's own devices over them. Both sources check their
/// paths when they are read (config check, `vm_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// The root device the stemcell image is written to.
    pub system: String,
    /// With `None` the agent carves ephemeral space after the root disk's last partition.
    pub ephemeral: Option<String>,
}

impl DiskLayout {
    pub fn from_defaults(defaults: &Defaults) -> DiskLayout {
        DiskLayout {
            system: defaults.system_disk.clone(),
            ephemeral: defaults.ephemeral_disk.clone(),
        }
    }
}

/// Build the settings object.
///
/// `mbus` and `blobstore` are left out when not configured: Go leaves a missing field at its
/// zero value (and would also ignore `null`), while a director-supplied `env.bosh.mbus.urls` or
/// `env.bosh.blobstores` takes precedence anyway (`Settings.GetMbusURLs`, `GetBlobstore`).
pub fn agent_settings(p: &SettingsParts) -> Result<Value> {
    match p.env {
        Value::Object(_) | Value::Null => {}
        other => {
            return Err(CpiError::cpi(format!(
                "create_vm env must be an object, got {}",
                json_type(other)
            )))
        }
    }
    for (cid, hint) in p.persistent_disks {
        // Strings (old CPIs) and objects ({"path": ...}) are what `PersistentDiskSettings` reads.
        if !(hint.is_string() || hint.is_object()) {
            return Err(CpiError::cpi(format!(
                "persistent disk '{cid}': its hint must be a device path or an object like \
                 {{\"path\": \"/dev/sdc\"}}, got {}",
                json_type(hint)
            )));
        }
    }

    let mut s = Map::new();
    s.insert("agent_id".into(), Value::String(p.agent_id.to_string()));
    s.insert("vm".into(), json!({ "name": p.vm_name }));
    if let Some(mbus) = &p.agent.mbus {
        s.insert("mbus".into(), Value::String(mbus.expose().to_string()));
    }
    s.insert(
        "ntp".into(),
        Value::Array(p.agent.ntp.iter().cloned().map(Value::String).collect()),
    );
    if let Some(blobstore) = &p.agent.blobstore {
        check_blobstore(blobstore)?;
        s.insert("blobstore".into(), blobstore.clone());
    }
    s.insert("networks".into(), Value::Object(p.networks.clone()));
    s.insert(
        "disks".into(),
        json!({
            "system": p.disks.system,
            "ephemeral": p.disks.ephemeral,
            "persistent": p.persistent_disks,
        }),
    );
    s.insert("env".into(), p.env.clone());
    Ok(Value::Object(s))
}

/// `Blobstore { Type string "provider"; Options map[string]interface{} "options" }`.
fn check_blobstore(b: &Value) -> Result<()> {
    let Value::Object(b) = b else {
        return Err(CpiError::cpi(format!(
            "agent.blobstore must be an object with provider and options, got {}",
            json_type(b)
        )));
    };
    match b.get("provider") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(CpiError::cpi(format!(
                "agent.blobstore.provider must be a string, got {}",
                json_type(other)
            )))
        }
    }
    match b.get("options") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(CpiError::cpi(format!(
            "agent.blobstore.options must be an object, got {}",
            json_type(other)
        ))),
    }
}

const REDACTED: &str = "<redacted>";

/// A copy of agent settings (or user data, which embeds them) that is safe to log: `env` holds
/// the VM password and the mbus client key, `mbus` carries credentials in its userinfo,
/// blobstore options carry passwords. Structure and network details stay visible.
pub fn redacted(doc: &Value) -> Value {
    let mut out = doc.clone();
    if let Value::Object(m) = &mut out {
        for key in ["env", "mbus"] {
            if let Some(v) = m.get_mut(key) {
                if !v.is_null() {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
        if let Some(Value::Object(b)) = m.get_mut("blobstore") {
            if let Some(o) = b.get_mut("options") {
                *o = Value::String(REDACTED.into());
            }
        }
        // Registry endpoints may embed `user:password@`.
        if let Some(Value::Object(r)) = m.get_mut("registry") {
            if let Some(e) = r.get_mut("endpoint") {
                *e = Value::String(ironic_cpi_common::redact::url_text(
                    e.as_str().unwrap_or_default(),
                ));
            }
        }
    }
    out
}
