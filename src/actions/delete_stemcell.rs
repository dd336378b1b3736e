//! `delete_stemcell`: remove image and metadata; idempotent.

use crate::error::Result;
use crate::protocol::methods::DeleteStemcell;
use crate::repository::Repository;
use crate::services::{Lazy, Notes};
use crate::stemcell;

pub fn run(stemcells: &Lazy<Repository>, notes: &Notes, args: DeleteStemcell) -> Result<()> {
    let cid = args.stemcell_cid.as_str();
    stemcell::delete(stemcells.get()?, cid)?;
    notes.note(format!("deleted stemcell {cid}"));
    Ok(())
}
