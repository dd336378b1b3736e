//! `delete_stemcell`: remove image and metadata; idempotent.

use serde_json::Value;

use crate::call::Call;
use crate::error::Result;
use crate::rpc::Args;
use crate::stemcell;

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let cid = args.string(0)?;
    stemcell::delete(&call.stemcell_repository()?, cid)?;
    call.note(format!("deleted stemcell {cid}"));
    Ok(Value::Null)
}
