//! `info`: called before nearly every other call, so it must stay cheap: no Ironic, no network.

use crate::error::Result;
use crate::protocol::methods::{CpiInfo, Info};

/// The stemcells this CPI deploys. OpenStack stemcells carry a whole-disk `root.img` that Ironic
/// writes to the node's root device: raw as it is, qcow2 converted by the deploy agent on the
/// fly. `openstack-light` is left out: a light stemcell only names a Glance image, and standalone
/// Ironic has no Glance.
pub const STEMCELL_FORMATS: [&str; 2] = ["openstack-raw", "openstack-qcow2"];

/// The newest CPI API this CPI speaks; the director refuses CPIs that report less than 2.
pub const API_VERSION: u32 = 2;

pub fn run(_args: Info) -> Result<CpiInfo> {
    Ok(CpiInfo {
        api_version: API_VERSION,
        stemcell_formats: STEMCELL_FORMATS.map(str::to_string).to_vec(),
    })
}
