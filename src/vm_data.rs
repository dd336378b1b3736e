//! What a VM leaves outside Ironic: its agent settings in the registry and its config drive
//! published in the metadata repository. create_vm writes them (through [`AgentFiles`], the
//! provisioner's `VmFiles`), and create_vm's rollback and delete_vm remove them, through this
//! module only.
//!
//! Both hold the agent's credentials, so both are kept to the VM that needs them:
//! - registry settings are readable only with that VM's own secret (`registry::AgentAccess`);
//! - a published config drive lives under an unguessable path (`<node>/<256 random bits>/`), is
//!   never logged with that path, and is removed as soon as the deploy has finished (or failed),
//!   since Ironic reads it only while deploying. Servers must not list the metadata collection to
//!   clients that may read it (the companion server never does; see docs/server.md for nginx).

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::{Config, Defaults};
use crate::configdrive::{self, ConfigDrive, DiskLayout, DriveInput};
use crate::error::{CpiError, Result};
use crate::ironic::Node;
use crate::pool::provision::VmFiles;
use crate::registry::{AgentAccess, RegistryClient};
use crate::repository::Repository;
use crate::services::{CallRegistry, Lazy, Notes};

/// What this module writes to, as one call has it: the registry and the metadata repository
/// (each built on first use), and the call's notes.
#[derive(Clone, Copy)]
pub struct VmData<'a> {
    pub registry: CallRegistry<'a>,
    pub metadata: &'a Lazy<'a, Option<Repository>>,
    pub notes: &'a Notes,
}

/// Inline when small enough for Ironic's database; otherwise (or with
/// `defaults.publish_configdrive`) published to the metadata repository and passed by URL,
/// gzipped and base64-encoded as Ironic's `configdrive` takes it.
pub fn configdrive_param(
    data: &VmData,
    defaults: &Defaults,
    uuid: &str,
    drive: &ConfigDrive,
) -> Result<String> {
    // Ironic stores the base64 text, so that is what must fit under the limit.
    let inline = drive.base64_len() <= defaults.configdrive_inline_max_bytes
        && !defaults.publish_configdrive;
    let encoded = drive.to_base64();
    if inline {
        data.notes.note(format!(
            "config drive: {} bytes gzipped, sent inline",
            drive.gzipped().len()
        ));
        return Ok(encoded);
    }
    let Some(repo) = data.metadata.get()? else {
        return Err(CpiError::cloud(format!(
            "the config drive is {} bytes (gzipped, base64), above \
             defaults.configdrive_inline_max_bytes ({}) or asked to be published \
             (defaults.publish_configdrive), and no metadata_repository is configured to \
             publish it",
            drive.base64_len(),
            defaults.configdrive_inline_max_bytes
        )));
    };
    let files = if defaults.publish_configdrive_files {
        drive.files()
    } else {
        &[]
    };
    let path = publish(repo, uuid, encoded.into_bytes(), files)?;
    data.notes.note(format!(
        "config drive: {} bytes gzipped, passed to Ironic by URL {} (removed once deployed)",
        drive.gzipped().len(),
        shown(&repo.public_url(&path))
    ));
    Ok(repo.public_url(&path))
}

/// Put a node's config drive (and, when given, its plain files) under a new unguessable
/// collection of the node; returns the drive's path relative to the repository.
pub fn publish(
    repo: &Repository,
    node_uuid: &str,
    encoded: Vec<u8>,
    files: &[(String, Vec<u8>)],
) -> Result<String> {
    let dir = format!("{node_uuid}/{}", hex::encode(rand::random::<[u8; 32]>()));
    let path = format!("{dir}/configdrive.gz.b64");
    repo.put_bytes(&path, encoded)?;
    for (file, content) in files {
        repo.put_bytes(&format!("{dir}/files/{file}"), content.clone())?;
    }
    Ok(path)
}

/// Remove every config drive published for a node; `false` when there was none.
pub fn unpublish(repo: &Repository, node_uuid: &str) -> Result<bool> {
    repo.delete(&format!("{node_uuid}/"))
}

/// A published drive's URL for logs: the unguessable part, which works as a password, hidden.
pub fn shown(url: &str) -> String {
    match url.rsplit_once('/').and_then(|(dir, file)| {
        dir.rsplit_once('/')
            .map(|(parent, _token)| format!("{parent}/<hidden>/{file}"))
    }) {
        Some(s) => s,
        None => "<hidden>".to_string(),
    }
}

/// The deploy has finished: Ironic needs the published drive no more.
pub fn deployed(data: &VmData, node_uuid: &str) {
    match data.metadata.get() {
        Ok(Some(repo)) => match unpublish(repo, node_uuid) {
            Ok(true) => data.notes.note("removed the published config drive"),
            Ok(false) => {}
            Err(e) => log::warn!(
                "could not remove the published config drive of {node_uuid} (delete_vm will): {e}"
            ),
        },
        Ok(None) => {}
        Err(e) => log::warn!("metadata repository: {e}"),
    }
}

/// The registry as one VM's create_vm uses it: the VM's own endpoint and credentials, and the
/// first PUT of its settings that makes them readable with those credentials.
struct VmRegistry<'a> {
    client: &'a RegistryClient,
    uuid: String,
    access: AgentAccess,
}

impl VmRegistry<'_> {
    /// The endpoint for the VM's user data (holds the VM's secret: never log it).
    pub fn agent_endpoint(&self) -> String {
        self.access.endpoint().to_string()
    }

    pub fn put_settings(&self, settings: &Value) -> Result<()> {
        self.client
            .put_settings_for(&self.uuid, settings, &self.access)
    }
}

/// The registry for the VM on node `uuid`, when this call uses one.
fn registry<'a>(data: &VmData<'a>, uuid: &str) -> Result<Option<VmRegistry<'a>>> {
    Ok(data.registry.get()?.map(|client| VmRegistry {
        access: client.agent_access(uuid),
        client,
        uuid: uuid.to_string(),
    }))
}

/// Registry settings and published config drives of a node's VM; missing ones are fine.
pub fn remove(data: &VmData, node_uuid: &str) {
    match data.registry.configured() {
        Ok(Some(registry)) => {
            if let Err(e) = registry.delete_settings(node_uuid) {
                log::warn!("could not delete registry settings of {node_uuid}: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!("registry: {e}"),
    }
    match data.metadata.get() {
        Ok(Some(repo)) => {
            if let Err(e) = unpublish(repo, node_uuid) {
                log::warn!("could not delete the published config drive of {node_uuid}: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!("metadata repository: {e}"),
    }
}

/// One VM's files for the provisioner (`pool::provision::VmFiles`): its config drive built per
/// candidate node, its registry settings and its published drive.
pub struct AgentFiles<'a> {
    config: &'a Config,
    data: VmData<'a>,
    agent_id: &'a str,
    networks: &'a Map<String, Value>,
    env: Value,
    disks: DiskLayout,
    /// Per candidate node: the registry access whose credentials its drive carries (each
    /// drive gets fresh ones), used again when the drive's node is reserved.
    registries: RefCell<HashMap<String, VmRegistry<'a>>>,
}

impl<'a> AgentFiles<'a> {
    pub fn new(
        config: &'a Config,
        data: VmData<'a>,
        agent_id: &'a str,
        networks: &'a Map<String, Value>,
        env: Value,
        disks: DiskLayout,
    ) -> Self {
        AgentFiles {
            config,
            data,
            agent_id,
            networks,
            env,
            disks,
            registries: RefCell::new(HashMap::new()),
        }
    }
}

impl VmFiles for AgentFiles<'_> {
    fn build(&self, node: &Node, macs: &[String], pxe_macs: &[String]) -> Result<ConfigDrive> {
        let cfg = self.config;
        let registry = registry(&self.data, &node.uuid)?;
        let endpoint = registry.as_ref().map(|r| r.agent_endpoint());
        if let Some(r) = registry {
            self.registries.borrow_mut().insert(node.uuid.clone(), r);
        }
        configdrive::build(&DriveInput {
            agent_id: self.agent_id,
            node_uuid: &node.uuid,
            node_macs: macs,
            pxe_macs,
            networks: self.networks,
            env: &self.env,
            agent: &cfg.agent,
            defaults: &cfg.defaults,
            disks: &self.disks,
            persistent_disks: &Map::new(),
            registry_endpoint: endpoint.as_deref(),
        })
    }

    fn publish(&self, node_uuid: &str, drive: &ConfigDrive) -> Result<String> {
        if let Some(registry) = self.registries.borrow().get(node_uuid) {
            registry.put_settings(drive.settings())?;
            self.data.notes.note(format!(
                "wrote agent settings to the registry under {node_uuid}"
            ));
        }
        configdrive_param(&self.data, &self.config.defaults, node_uuid, drive)
    }

    fn remove(&self, node_uuid: &str) {
        remove(&self.data, node_uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_show_the_unguessable_part() {
        let token = "ab".repeat(32);
        let url = format!("http://10.0.0.2:25780/metadata/node-1/{token}/configdrive.gz.b64");
        let s = shown(&url);
        assert_eq!(
            s,
            "http://10.0.0.2:25780/metadata/node-1/<hidden>/configdrive.gz.b64"
        );
        assert!(!s.contains(&token));
    }
}
