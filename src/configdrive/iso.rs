//! The drive image: ISO 9660 with Rock Ridge and Joliet, volume id `config-2`, then gzip and
//! base64 as Ironic's `configdrive` field takes it.
//!
//! Both extensions are written because plain ISO 9660 names are mangled (`META_DAT.JSO;1`):
//! Linux's iso9660 driver (what the agent's `mount` uses) prefers Rock Ridge, other readers
//! Joliet, and both must show the exact lower-case paths the agent opens.

use std::io::{Cursor, Write};

use base64::Engine;
use flate2::{write::GzEncoder, Compression};
use hadris_iso::read::PathSeparator;
use hadris_iso::rrip::RripOptions;
use hadris_iso::write::options::{BaseIsoLevel, CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{InputEntry, InputMetadata, InputTree, IsoImageWriter};

use crate::error::{CpiError, Result};

/// The label the agent (and cloud-init) look for: `/dev/disk/by-label/config-2`.
pub const VOLUME_ID: &str = "config-2";

/// Names the builder, as OpenStack's tooling does ("ironicclient-configdrive 0.1"), so that a
/// person inspecting a node's drive can tell where it came from.
const PUBLISHER: &str = "ironic-cpi configdrive";

/// Build the ISO image holding `files` (paths with `/`, no leading slash).
pub fn write_iso(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let tree = InputTree::new(PathSeparator::ForwardSlash, tree_of(files)?);
    let options = IsoFormatOptions {
        volume_name: VOLUME_ID.to_string(),
        system_id: None,
        volume_set_id: None,
        publisher_id: Some(PUBLISHER.to_string()),
        preparer_id: None,
        application_id: None,
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        // Stored as given, like genisoimage does: the label must stay lower case.
        strict_charset: false,
        features: CreationFeatures {
            filenames: BaseIsoLevel::Level2 {
                supports_lowercase: true,
                supports_rrip: true,
            },
            long_filenames: false,
            joliet: Some(hadris_iso::joliet::JolietLevel::Level3),
            rock_ridge: Some(RripOptions {
                // Nothing here is deep, owned by anyone, or a special file.
                relocate_deep_dirs: false,
                preserve_ownership: false,
                preserve_symlinks: false,
                preserve_devices: false,
                ..RripOptions::default()
            }),
            el_torito: None,
            hybrid_boot: None,
        },
    };
    // Descriptors, path tables and directories take well under 64 sectors: one allocation.
    let capacity = files.iter().map(|(_, c)| c.len() + 2048).sum::<usize>() + 64 * 2048;
    let out = IsoImageWriter::create(Cursor::new(Vec::with_capacity(capacity)), tree, options)
        .map_err(|e| {
            CpiError::cloud(format!("cannot write the config drive ISO image: {e}")).because(e)
        })?;
    Ok(out.into_inner())
}

/// Nest flat paths into directories; files are world-readable, directories traversable.
fn tree_of(files: &[(String, Vec<u8>)]) -> Result<Vec<InputEntry>> {
    // Entries keep the order of `files`, so the layout on disc follows the caller's list.
    enum Node {
        Dir(Vec<(String, Node)>),
        File(Vec<u8>),
    }
    fn insert(
        dir: &mut Vec<(String, Node)>,
        parts: &[&str],
        contents: &[u8],
        path: &str,
    ) -> Result<()> {
        let (first, rest) = match parts.split_first() {
            Some(x) => x,
            None => return Err(CpiError::cloud(format!("empty config drive path '{path}'"))),
        };
        if rest.is_empty() {
            if dir.iter().any(|(n, _)| n == first) {
                return Err(CpiError::cloud(format!(
                    "duplicate config drive path '{path}'"
                )));
            }
            dir.push((first.to_string(), Node::File(contents.to_vec())));
            return Ok(());
        }
        let idx = match dir.iter().position(|(n, _)| n == first) {
            Some(i) => i,
            None => {
                dir.push((first.to_string(), Node::Dir(Vec::new())));
                dir.len() - 1
            }
        };
        match &mut dir[idx].1 {
            Node::Dir(children) => insert(children, rest, contents, path),
            Node::File(_) => Err(CpiError::cloud(format!(
                "config drive path '{path}' runs through a file"
            ))),
        }
    }
    fn convert(nodes: Vec<(String, Node)>) -> Vec<InputEntry> {
        nodes
            .into_iter()
            .map(|(name, node)| match node {
                Node::Dir(children) => {
                    InputEntry::directory(name, convert(children)).with_metadata(mode(0o40755))
                }
                Node::File(contents) => {
                    InputEntry::file(name, contents).with_metadata(mode(0o100644))
                }
            })
            .collect()
    }
    fn mode(m: u32) -> InputMetadata {
        InputMetadata {
            mode: Some(m),
            ..InputMetadata::default()
        }
    }

    let mut root = Vec::new();
    for (path, contents) in files {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        insert(&mut root, &parts, contents, path)?;
    }
    Ok(convert(root))
}

/// Gzip with the best compression: the inline drive lives in Ironic's database, every byte counts.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::best());
    enc.write_all(data)
        .and_then(|_| enc.finish())
        .map_err(|e| CpiError::cloud(format!("cannot gzip the config drive: {e}")).because(e))
}

/// One line, standard alphabet, padded: what Ironic's `configdrive` string takes.
pub fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
