//! `create_vm`: take a node from the pool and deploy the stemcell on it.
//!
//! Read top to bottom: check the input and the stemcell; list the pool once; enroll a machine
//! if the vm_type says so; pick the best-fitting free nodes; claim one atomically; then provide,
//! build the config drive, deploy and wait for `active`. Any failure after the claim returns the
//! node to the pool exactly as it was before the error is answered.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::call::Call;
use crate::config::{secs, Defaults};
use crate::configdrive::{self, DriveInput};
use crate::disks::cid::DiskCid;
use crate::error::{CpiError, Result};
use crate::ironic::{IronicClient, IronicError, PatchOp};
use crate::pool::claim::{claim_first, ClaimOutcome, Claimed};
use crate::pool::cloud_properties::VmCloudProperties;
use crate::pool::record::VM_KEY;
use crate::pool::select::{select, Criteria, PoolSnapshot};
use crate::pool::teardown::Teardown;
use crate::pool::{enroll, inventory};
use crate::rpc::Args;
use crate::stemcell::{self, StemcellMeta};
use crate::vm_data;

/// The stemcell as Ironic downloads it.
struct Image {
    url: String,
    meta: StemcellMeta,
}

struct Input<'a> {
    agent_id: &'a str,
    stemcell_cid: &'a str,
    props: VmCloudProperties,
    networks: Map<String, Value>,
    disk_cids: Vec<String>,
    env: Value,
}

pub fn run(call: &Call, args: &Args) -> Result<Value> {
    let input = Input {
        agent_id: args.string(0)?,
        stemcell_cid: args.string(1)?,
        props: VmCloudProperties::parse(&args.object(2)?)?,
        networks: args.object(3)?,
        disk_cids: args.string_list(4)?,
        env: Value::Object(args.object(5)?),
    };
    let stemcells = call.stemcell_repository()?;
    let stemcell = stemcell::lookup(&stemcells, input.stemcell_cid)?;
    let image = Image {
        url: stemcells.public_url(&stemcell::image_path(&stemcell.cid)),
        meta: stemcell,
    };
    let client = call.ironic()?;

    let mut pool = inventory::load(client).map_err(|e| failed(e, "listing the node pool"))?;
    call.note(format!(
        "pool has {} nodes ({} HTTP requests so far)",
        pool.nodes.len(),
        client.request_count()
    ));
    if let Some(params) = &input.props.ironic_params {
        if input
            .props
            .macs
            .iter()
            .all(|m| pool.node_with_mac(m).is_none())
        {
            let cfg = &call.config()?.ironic;
            let node = enroll::enroll(client, cfg, params, &input.props.macs)
                .map_err(|e| CpiError::vm_creation_failed(e.message, true))?;
            call.note(format!("enrolled node {} from ironic_params", node.label()));
            pool.add(node, &input.props.macs);
        }
    }

    let pinned = disk_node(&pool, &input.disk_cids)?;
    let criteria = Criteria {
        props: &input.props,
        az_field: &call.config()?.defaults.availability_zone_field,
        pinned_node: pinned.as_deref(),
    };
    let selection = select(&pool, &criteria, &mut rand::rng());
    if selection.candidates.is_empty() {
        return Err(no_free_node(&input.props, &selection, pinned.as_deref()));
    }

    let claimed = match claim_first(
        client,
        &selection.candidates,
        input.agent_id,
        input.stemcell_cid,
    ) {
        Ok(ClaimOutcome::Claimed(c)) => c,
        Ok(ClaimOutcome::AllTaken { lost }) => {
            return Err(CpiError::vm_creation_failed(
                format!(
                    "all {lost} free nodes matching {} were taken by concurrent requests; \
                     try again",
                    input.props.selector_summary()
                ),
                true,
            ))
        }
        Err(e) => return Err(failed(e, "claiming a node")),
    };
    call.note(format!(
        "claimed node {} (was {})",
        claimed.node.label(),
        claimed.record.origin_state
    ));

    match deploy(call, client, &pool, &claimed, &input, &image) {
        Ok(result) => Ok(result),
        Err(e) => Err(rollback(call, client, &claimed, e)),
    }
}

fn deploy(
    call: &Call,
    client: &IronicClient,
    pool: &PoolSnapshot,
    claimed: &Claimed,
    input: &Input,
    image: &Image,
) -> Result<Value> {
    let stemcell = &image.meta;
    let cfg = call.config()?;
    let node = &claimed.node;
    let uuid = node.uuid.as_str();

    if node.state() == "manageable" {
        let started = Instant::now();
        ironic(client.set_provision_state(uuid, "provide", None), "provide")?;
        ironic(
            client.wait_for_provision_state(
                uuid,
                &["available"],
                secs(cfg.ironic.timeouts.provide),
            ),
            "waiting for the node to become available",
        )?;
        call.note(format!(
            "provided node {} in {:.1} s",
            node.label(),
            started.elapsed().as_secs_f64()
        ));
    }

    let registry = call.registry()?;
    let defaults = Defaults {
        system_disk: input
            .props
            .system_disk
            .clone()
            .unwrap_or_else(|| cfg.defaults.system_disk.clone()),
        ephemeral_disk: input
            .props
            .ephemeral_disk
            .clone()
            .or_else(|| cfg.defaults.ephemeral_disk.clone()),
        ..cfg.defaults.clone()
    };
    let endpoint = registry.as_ref().map(|r| r.agent_endpoint());
    let drive = configdrive::build(&DriveInput {
        agent_id: input.agent_id,
        node_uuid: uuid,
        node_macs: pool.macs_of(uuid),
        pxe_macs: pool.pxe_macs_of(uuid),
        networks: &input.networks,
        env: &input.env,
        agent: &cfg.agent,
        defaults: &defaults,
        persistent_disks: &Map::new(),
        registry_endpoint: endpoint.as_deref(),
    })?;
    if let Some(registry) = &registry {
        registry.put_settings(uuid, drive.settings())?;
        call.note(format!("wrote agent settings to the registry under {uuid}"));
    }
    let configdrive = vm_data::configdrive_param(call, uuid, &drive)?;

    let mut ops = vec![
        PatchOp::add("/instance_info/image_source", json!(image.url)),
        PatchOp::add("/instance_info/image_os_hash_algo", json!("sha256")),
        PatchOp::add("/instance_info/image_os_hash_value", json!(stemcell.sha256)),
        PatchOp::add(
            "/instance_info/image_disk_format",
            json!(stemcell.disk_format),
        ),
        PatchOp::add("/instance_info/bosh_agent_id", json!(input.agent_id)),
    ];
    if let Some(hints) = &input.props.root_device {
        ops.push(PatchOp::add(
            "/instance_info/root_device",
            Value::Object(hints.clone()),
        ));
    }
    if let Some(caps) = &input.props.capabilities {
        ops.push(PatchOp::add(
            "/instance_info/capabilities",
            Value::Object(caps.clone()),
        ));
    }
    ironic(client.patch_node(uuid, &ops), "setting instance_info")?;

    let validation = ironic(client.validate_node(uuid), "validating the node")?;
    check_validation(&validation, &node.label())?;

    let started = Instant::now();
    ironic(
        client.set_provision_state(uuid, "active", Some(json!({ "configdrive": configdrive }))),
        "starting the deploy",
    )?;
    let active = ironic(
        client.wait_for_provision_state(uuid, &["active"], secs(cfg.ironic.timeouts.deploy)),
        "deploying",
    )?;
    call.note(format!(
        "deployed {} on node {} in {:.1} s ({} HTTP requests to Ironic in all)",
        stemcell.cid,
        active.label(),
        started.elapsed().as_secs_f64(),
        client.request_count()
    ));

    if call.api_version() >= 2 {
        Ok(json!([uuid, Value::Object(drive.networks().clone())]))
    } else {
        Ok(json!(uuid))
    }
}

/// `validate` answers per interface; a `false` there would only surface later as a failed deploy.
fn check_validation(v: &Value, node: &str) -> Result<()> {
    let problems: Vec<String> = ["power", "management", "boot", "deploy"]
        .iter()
        .filter(|iface| v[**iface]["result"] == json!(false))
        .map(|iface| {
            format!(
                "{iface}: {}",
                v[*iface]["reason"].as_str().unwrap_or("no reason given")
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CpiError::cloud(format!(
            "node {node} fails Ironic's validation: {}",
            problems.join("; ")
        ))
        .retryable(true))
    }
}

/// The node holding the VM's persistent disks: a VM must land where its local disks are.
fn disk_node(pool: &PoolSnapshot, disk_cids: &[String]) -> Result<Option<String>> {
    let mut pinned: Option<String> = None;
    for cid in disk_cids {
        let parsed = DiskCid::parse(cid).ok_or_else(|| {
            CpiError::cloud(format!("disk_cids: '{cid}' is not a disk id of this CPI"))
        })?;
        let node = pool.node_with_mac(&parsed.mac).ok_or_else(|| {
            CpiError::cloud(format!(
                "disk {cid} lives on the node with MAC {}, which is not in the pool any more",
                parsed.mac
            ))
        })?;
        if pinned.as_deref().is_some_and(|p| p != node.uuid) {
            return Err(CpiError::cloud(format!(
                "disk_cids {disk_cids:?} live on different nodes; one VM can only use the local \
                 disks of its own node"
            )));
        }
        pinned = Some(node.uuid.clone());
    }
    Ok(pinned)
}

fn no_free_node(
    props: &VmCloudProperties,
    selection: &crate::pool::select::Selection,
    pinned: Option<&str>,
) -> CpiError {
    let explanation = selection.explain();
    if let Some(node) = pinned {
        return CpiError::vm_creation_failed(
            format!(
                "the VM's persistent disks live on node {node}, and that node is not free \
                 ({explanation}); delete the VM that holds it or wait for it to be released"
            ),
            false,
        );
    }
    // Nothing matches at all: retrying cannot help until the operator changes the pool.
    let retry = selection.matching() > 0;
    CpiError::vm_creation_failed(
        format!(
            "no free node matches cloud_properties {}: {explanation}",
            props.selector_summary()
        ),
        retry,
    )
}

fn rollback(call: &Call, client: &IronicClient, claimed: &Claimed, e: CpiError) -> CpiError {
    let node = claimed.node.label();
    log::error!("create_vm on node {node} failed, returning the node to the pool: {e}");
    vm_data::remove(call, &claimed.node.uuid);
    let teardown = match call.config() {
        Ok(cfg) => Teardown {
            client,
            ironic: &cfg.ironic,
            clean: false,
        },
        Err(ce) => return ce,
    };
    match teardown.run(&claimed.node.uuid, &claimed.record) {
        Ok(report) => {
            for step in &report.steps {
                call.note(step.clone());
            }
            CpiError::vm_creation_failed(
                format!("{}; node {node} was returned to the pool", e.message),
                e.ok_to_retry,
            )
        }
        Err(te) => CpiError::vm_creation_failed(
            format!(
                "{}; returning node {node} to the pool failed too: {}. It still carries \
                 extra.{VM_KEY} and instance_uuid {}: fix the node, then run delete_vm for it",
                e.message, te.message, claimed.record.instance_uuid
            ),
            e.ok_to_retry,
        ),
    }
}

fn ironic<T>(r: std::result::Result<T, IronicError>, what: &str) -> Result<T> {
    r.map_err(|e| CpiError::cloud(format!("{what}: {e}")).retryable(true))
}

/// A failure before any node was claimed: nothing to undo, and another try may succeed, unless
/// the credentials or the TLS trust are wrong.
fn failed(e: IronicError, what: &str) -> CpiError {
    let retry = !e.needs_configuration();
    CpiError::vm_creation_failed(format!("{what}: {e}"), retry)
}
