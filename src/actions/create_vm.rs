//! `create_vm`: check the input, find the stemcell, and let the provisioner put the VM on a
//! node (`pool::provision`): reserve, provide, deploy, wait for `active`, and return the node
//! exactly as it was on any failure.

use serde_json::Value;

use crate::config::Config;
use crate::configdrive::check;
use crate::error::Result;
use crate::ironic::Ironic;
use crate::pool::provision::{Image, Plan, Provisioner};
use crate::pool::whoami::{on_this_host, Process};
use crate::protocol::methods::{CreateVm, VmCreated};
use crate::repository::Repository;
use crate::services::Lazy;
use crate::stemcell;
use crate::vm_data::{self, AgentFiles, VmData};
use crate::vm_type::VmCloudProperties;

/// What create_vm uses; each is built on first use.
pub struct Deps<'a> {
    pub config: &'a Config,
    pub ironic: &'a Lazy<'a, dyn Ironic>,
    pub stemcells: &'a Lazy<'a, Repository>,
    /// The agent's registry settings, the published config drive, and the call's notes.
    pub files: VmData<'a>,
    pub api_version: u32,
    pub me: Process,
}

pub fn run(deps: Deps, args: CreateVm) -> Result<VmCreated> {
    let agent_id = args.agent_id.as_str();
    check::check_agent_id(agent_id)?;
    let stemcell_cid = args.stemcell_cid.as_str();
    let props = VmCloudProperties::parse(&args.cloud_properties)?;
    let networks = args.networks.clone();
    let disk_cids = args.disk_cids.clone();
    let env = args.env.clone();
    check::check_input(&networks, &env)?;
    let cfg = deps.config;

    let stemcells = deps.stemcells.get()?;
    let stemcell = stemcell::lookup(stemcells, stemcell_cid)?;
    let image = Image {
        url: stemcells.public_url(&stemcell::image_path(&stemcell.cid)),
        sha256: stemcell.sha256.clone(),
        disk_format: stemcell.disk_format.clone(),
    };
    let files = AgentFiles::new(
        cfg,
        deps.files,
        agent_id,
        &networks,
        Value::Object(env),
        props.disk_layout(&cfg.defaults),
    );
    let note = |m: String| deps.files.notes.note(m);
    let provisioner = Provisioner {
        api: deps.ironic.get()?,
        ironic: &cfg.ironic,
        files: &files,
        note: &note,
        liveness: &on_this_host,
    };
    let plan = Plan {
        agent_id,
        stemcell_cid,
        props: &props,
        az_field: &cfg.defaults.availability_zone_field,
        disk_cids: &disk_cids,
        image: &image,
        clean_on_delete: props.clean_on_delete,
        me: deps.me,
    };
    let created = provisioner.create(&plan, &mut rand::rng())?;
    // Ironic has written the drive: a published copy (it holds the agent's secrets) goes now.
    vm_data::deployed(&deps.files, &created.cid.node);
    let cid = created.cid.to_string();
    if deps.api_version >= 2 {
        Ok(VmCreated::WithNetworks(cid, created.networks))
    } else {
        Ok(VmCreated::Cid(cid))
    }
}
