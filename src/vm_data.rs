//! What a VM leaves outside Ironic: its agent settings in the registry and its config drive
//! published in the metadata repository. create_vm writes them, and create_vm's rollback and
//! delete_vm remove them, through this module only.

use crate::call::Call;
use crate::configdrive::ConfigDrive;
use crate::error::{CpiError, Result};

/// Inline when small enough for Ironic's database; otherwise (or when asked) published to the
/// metadata repository, gzipped and base64-encoded as Ironic's `configdrive` takes it.
pub fn configdrive_param(call: &Call, uuid: &str, drive: &ConfigDrive) -> Result<String> {
    let defaults = &call.config()?.defaults;
    // Ironic stores the base64 text, so that is what must fit under the limit.
    let inline = drive.base64_len() <= defaults.configdrive_inline_max_bytes;
    let publish = !inline || defaults.publish_configdrive || defaults.publish_configdrive_files;
    let encoded = drive.to_base64();
    if !publish {
        call.note(format!(
            "config drive: {} bytes gzipped, sent inline",
            drive.gzipped().len()
        ));
        return Ok(encoded);
    }
    let Some(repo) = call.metadata_repository()? else {
        return Err(CpiError::cloud(format!(
            "the config drive is {} bytes (gzipped, base64), above \
             defaults.configdrive_inline_max_bytes ({}), and no metadata_repository is configured \
             to publish it",
            drive.base64_len(),
            defaults.configdrive_inline_max_bytes
        )));
    };
    let path = published_path(uuid);
    repo.put_bytes(&path, encoded.clone().into_bytes())?;
    if defaults.publish_configdrive_files {
        for (file, content) in drive.files() {
            repo.put_bytes(&format!("{uuid}/files/{file}"), content.clone())?;
        }
    }
    if inline {
        call.note(format!(
            "config drive: {} bytes gzipped, sent inline, copy published at {}",
            drive.gzipped().len(),
            repo.url(&path)
        ));
        Ok(encoded)
    } else {
        call.note(format!(
            "config drive: {} bytes gzipped, passed to Ironic by URL {}",
            drive.gzipped().len(),
            repo.public_url(&path)
        ));
        Ok(repo.public_url(&path))
    }
}

/// Where a node's config drive is published (gzipped, base64, as Ironic's `configdrive` takes it).
pub fn published_path(node_uuid: &str) -> String {
    format!("{node_uuid}/configdrive.gz.b64")
}

/// Registry settings and published config drives of a node's VM; missing ones are fine.
pub fn remove(call: &Call, node_uuid: &str) {
    match call.configured_registry() {
        Ok(Some(registry)) => {
            if let Err(e) = registry.delete_settings(node_uuid) {
                log::warn!("could not delete registry settings of {node_uuid}: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!("registry: {e}"),
    }
    match call.metadata_repository() {
        Ok(Some(repo)) => {
            if let Err(e) = repo.delete(&format!("{node_uuid}/")) {
                log::warn!("could not delete the published config drive of {node_uuid}: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!("metadata repository: {e}"),
    }
}
