//! `create_stemcell`: stream the stemcell's `root.img` into the stemcell repository.

use std::path::Path;

use crate::error::Result;
use crate::protocol::methods::CreateStemcell;
use crate::repository::Repository;
use crate::services::{Lazy, Notes};
use crate::stemcell;

pub fn run(stemcells: &Lazy<Repository>, notes: &Notes, args: CreateStemcell) -> Result<String> {
    let image_path = args.image_path.as_str();
    let cloud_properties = args.cloud_properties.clone();
    let repo = stemcells.get()?;
    let started = std::time::Instant::now();
    let meta = stemcell::upload(repo, Path::new(image_path), &cloud_properties)?;
    notes.note(format!(
        "uploaded stemcell {} ({} bytes, {}, sha256 {}) in {:.1} s",
        meta.cid,
        meta.size,
        meta.disk_format,
        meta.sha256,
        started.elapsed().as_secs_f64()
    ));
    Ok(meta.cid)
}
