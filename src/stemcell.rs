//! Stemcells in the WebDAV repository.
//!
//! Layout, under the stemcell repository URL:
//!
//! ```text
//! <cid>/root.img        the disk image Ironic downloads (qcow2 or raw)
//! <cid>/stemcell.json   sha256, format, name, version, os: written last, so a stemcell exists
//!                       exactly when this file does
//! ```

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::mpsc;

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{CpiError, Result};
use crate::repository::Repository;

pub const IMAGE_FILE: &str = "root.img";
pub const META_FILE: &str = "stemcell.json";
pub const FORMATS: [&str; 2] = ["qcow2", "raw"];

const CHUNK: usize = 256 * 1024;
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StemcellMeta {
    pub cid: String,
    pub sha256: String,
    pub disk_format: String,
    pub size: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    pub uploaded_at: String,
}

pub fn image_path(cid: &str) -> String {
    format!("{cid}/{IMAGE_FILE}")
}

pub fn meta_path(cid: &str) -> String {
    format!("{cid}/{META_FILE}")
}

/// A stemcell's metadata; an unknown one is a CloudError (a retry of create_vm cannot help).
pub fn lookup(repo: &Repository, cid: &str) -> Result<StemcellMeta> {
    check_cid(cid)?;
    let bytes = repo.get_bytes(&meta_path(cid))?.ok_or_else(|| {
        CpiError::cloud(format!(
            "stemcell {cid} not found: {} does not exist (upload it with create_stemcell)",
            repo.url(&meta_path(cid))
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CpiError::cloud(format!(
            "stemcell {cid}: {} is not valid stemcell metadata: {}",
            repo.url(&meta_path(cid)),
            crate::redact::serde_message(&e.to_string())
        ))
    })
}

/// Stream `root.img` out of the stemcell image tarball into the repository.
pub fn upload(
    repo: &Repository,
    tarball: &Path,
    cloud_properties: &Map<String, Value>,
) -> Result<StemcellMeta> {
    let declared = declared_format(cloud_properties)?;
    let text = |k: &str| {
        cloud_properties
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let name = text("name");
    let version = text("version");
    let cid = new_cid(name.as_deref(), version.as_deref());

    let (size_tx, size_rx) = mpsc::sync_channel(1);
    let (data_tx, data_rx) = mpsc::sync_channel(4);
    let path = tarball.to_path_buf();
    let producer = std::thread::spawn(move || extract_root_img(&path, size_tx, data_tx));

    let size = match size_rx.recv() {
        Ok(size) => size,
        // The producer ended before finding root.img: its result says why.
        Err(_) => {
            return Err(match producer.join() {
                Ok(Err(e)) => e,
                _ => CpiError::cloud("stemcell extraction stopped unexpectedly"),
            })
        }
    };
    let reader = ChannelReader {
        rx: data_rx,
        buf: Vec::new(),
        pos: 0,
    };
    let uploaded = repo.put_reader(&image_path(&cid), Box::new(reader), Some(size));
    let extracted = producer
        .join()
        .unwrap_or_else(|_| Err(CpiError::cloud("stemcell extraction thread panicked")));
    let outcome = match (uploaded, extracted) {
        (Ok(()), Ok(digest)) => finish(
            repo,
            &cid,
            declared,
            digest,
            name,
            version,
            cloud_properties,
        ),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    };
    if outcome.is_err() {
        // No half-written stemcell stays behind.
        let _ = repo.delete(&image_path(&cid));
        let _ = repo.delete(&format!("{cid}/"));
    }
    outcome
}

pub fn delete(repo: &Repository, cid: &str) -> Result<()> {
    check_cid(cid)?;
    // Metadata first: from then on the stemcell no longer exists for create_vm.
    repo.delete(&meta_path(cid))?;
    repo.delete(&image_path(cid))?;
    repo.delete(&format!("{cid}/"))?;
    Ok(())
}

fn finish(
    repo: &Repository,
    cid: &str,
    declared: Option<String>,
    digest: Extracted,
    name: Option<String>,
    version: Option<String>,
    cloud_properties: &Map<String, Value>,
) -> Result<StemcellMeta> {
    let sniffed = if digest.qcow2 { "qcow2" } else { "raw" };
    if let Some(declared) = &declared {
        if declared != sniffed {
            return Err(CpiError::cloud(format!(
                "stemcell says disk_format '{declared}' but root.img is {sniffed}"
            )));
        }
    }
    let meta = StemcellMeta {
        cid: cid.to_string(),
        sha256: digest.sha256,
        disk_format: sniffed.to_string(),
        size: digest.size,
        name,
        version,
        os: cloud_properties
            .get("os_distro")
            .and_then(Value::as_str)
            .map(str::to_string),
        uploaded_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    #[expect(
        clippy::expect_used,
        reason = "a struct of strings and numbers always serialises"
    )]
    let body = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
    repo.put_bytes(&meta_path(cid), body)?;
    Ok(meta)
}

fn declared_format(cp: &Map<String, Value>) -> Result<Option<String>> {
    match cp.get("disk_format") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(f)) if FORMATS.contains(&f.as_str()) => Ok(Some(f.clone())),
        Some(other) => Err(CpiError::cloud(format!(
            "stemcell disk_format {} is not supported: the Ironic CPI deploys qcow2 and raw \
             images (openstack-qcow2, openstack-raw stemcells)",
            match other {
                Value::String(s) => format!("'{s}'"),
                v => v.to_string(),
            }
        ))),
    }
}

/// Readable and unique: two uploads of the same stemcell version never collide.
fn new_cid(name: Option<&str>, version: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut cid = String::from("stemcell");
    for part in [name, version].into_iter().flatten() {
        cid.push('-');
        cid.push_str(&clean(part));
    }
    cid.push('-');
    cid.push_str(nonce);
    cid
}

fn check_cid(cid: &str) -> Result<()> {
    let ok = !cid.is_empty()
        && !cid.starts_with('.')
        && cid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CpiError::cloud(format!(
            "'{cid}' is not a stemcell id of this CPI"
        )))
    }
}

struct Extracted {
    sha256: String,
    size: u64,
    qcow2: bool,
}

/// Find `root.img` in the (gzipped) tarball and stream it in chunks, hashing on the way.
fn extract_root_img(
    path: &Path,
    size_tx: mpsc::SyncSender<u64>,
    data_tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>,
) -> Result<Extracted> {
    let fail = |what: String| CpiError::cloud(format!("stemcell image {}: {what}", path.display()));
    let mut file = BufReader::new(std::fs::File::open(path).map_err(|e| fail(reason(&e)))?);
    let gz = {
        use std::io::BufRead;
        let head = file.fill_buf().map_err(|e| fail(reason(&e)))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let input: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| fail(format!("not a tar archive ({})", reason(&e))))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| fail(format!("not a valid tar archive ({})", reason(&e))))?;
        let entry_path = entry
            .path()
            .map_err(|e| fail(format!("an entry's name does not parse ({})", reason(&e))))?
            .into_owned();
        // Only an exact `root.img` (or `./root.img`) counts: nothing is written to disk, and a
        // `../root.img` or `/root.img` is not the stemcell's image.
        let components: Vec<_> = entry_path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        let is_root_img = components.len() == 1
            && matches!(components[0], std::path::Component::Normal(n) if n == IMAGE_FILE)
            && entry.header().entry_type().is_file();
        if !is_root_img {
            continue;
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| fail(format!("an entry's size does not parse ({})", reason(&e))))?;
        if size_tx.send(size).is_err() {
            return Err(fail("upload ended early".into()));
        }
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut qcow2 = false;
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let n = match entry.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = data_tx.send(Err(std::io::Error::other(reason(&e))));
                    return Err(fail(format!("reading root.img: {}", reason(&e))));
                }
            };
            chunk.truncate(n);
            if total == 0 {
                qcow2 = chunk.starts_with(QCOW2_MAGIC);
            }
            hasher.update(&chunk);
            total += n as u64;
            if data_tx.send(Ok(chunk)).is_err() {
                return Err(fail("the upload stopped reading".into()));
            }
        }
        if total != size {
            return Err(fail(format!(
                "root.img is truncated: {total} of {size} bytes"
            )));
        }
        return Ok(Extracted {
            sha256: hex::encode(hasher.finalize()),
            size,
            qcow2,
        });
    }
    Err(fail(
        "it holds no root.img (is this a stemcell's image file?)".into(),
    ))
}

/// Why reading the image failed, without the bytes it read: the tar and gzip decoders quote
/// what they could not parse, and the file may be anything (a config, a key, `/etc/shadow` behind
/// an `image` symlink). Errors of the system (permission denied, I/O error) are shown as they are.
fn reason(e: &std::io::Error) -> String {
    if e.raw_os_error().is_some() {
        e.to_string()
    } else {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the file ends early".to_string(),
            _ => "its content is not a gzipped tar archive of the expected form".to_string(),
        }
    }
}

/// The upload's body: chunks from the extraction thread; an extraction error becomes a read
/// error, so the HTTP request is aborted instead of completing with a short image.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cids_are_readable_and_unique() {
        let a = new_cid(
            Some("bosh-openstack-kvm-ubuntu-jammy-go_agent"),
            Some("1.406"),
        );
        let b = new_cid(
            Some("bosh-openstack-kvm-ubuntu-jammy-go_agent"),
            Some("1.406"),
        );
        assert!(
            a.starts_with("stemcell-bosh-openstack-kvm-ubuntu-jammy-go_agent-1.406-"),
            "{a}"
        );
        assert_ne!(a, b);
        check_cid(&a).unwrap();
        assert!(check_cid("../etc").is_err());
        assert!(check_cid("a/b").is_err());
    }

    #[test]
    fn formats_other_than_qcow2_and_raw_are_refused() {
        let cp = json!({"disk_format": "ovf"});
        let e = declared_format(cp.as_object().unwrap()).unwrap_err();
        assert!(
            e.message.contains("'ovf'") && e.message.contains("qcow2"),
            "{}",
            e.message
        );
        let cp = json!({"disk_format": "raw"});
        assert_eq!(
            declared_format(cp.as_object().unwrap()).unwrap().as_deref(),
            Some("raw")
        );
    }
}
