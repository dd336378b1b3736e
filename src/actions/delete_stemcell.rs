//! `delete_stemcell`: remove image and metadata; idempotent.

use crate::call::Call;
use crate::error::Result;
use crate::protocol::methods::DeleteStemcell;
use crate::stemcell;

pub fn run(call: &Call, args: DeleteStemcell) -> Result<()> {
    let cid = args.stemcell_cid.as_str();
    stemcell::delete(&call.stemcell_repository()?, cid)?;
    call.note(format!("deleted stemcell {cid}"));
    Ok(())
}
