//! `delete_vm`: return the VM's node to the pool as it was found (`pool::teardown`). A VM that
//! is gone (no node, or a node that holds another VM or none) is success, and nothing is
//! touched: a late or repeated delete_vm never reaches the VM that holds the node now.

use crate::config::Config;
use crate::error::Result;
use crate::ironic::Ironic;
use crate::pool::teardown::{self, Teardown};
use crate::pool::vm::parse_cid;
use crate::pool::whoami::{on_this_host, Process};
use crate::protocol::methods::DeleteVm;
use crate::services::Lazy;
use crate::vm_data::{self, VmData};

pub fn run(
    cfg: &Config,
    ironic: &Lazy<dyn Ironic>,
    files: VmData,
    me: Process,
    args: DeleteVm,
) -> Result<()> {
    let cid = parse_cid(args.vm_cid.as_str())?;
    let teardown = Teardown {
        api: ironic.get()?,
        ironic: &cfg.ironic,
        me,
        may_drop_vm_claim: false,
        force: false,
        liveness: &on_this_host,
    };
    let remove_files = |node: &str| vm_data::remove(&files, node);
    let report = teardown::delete_vm(&teardown, &cid, &remove_files)
        .map_err(|e| e.context(format!("delete_vm {cid}")))?;
    for step in report.steps {
        files.notes.note(step);
    }
    Ok(())
}
