//! Putting a VM on a node, top to bottom:
//!
//! 1. read the pool once; enroll a machine if the vm_type says so;
//! 2. check the VM's persistent disks against the records on their node (they pin the VM);
//! 3. pick the best-fitting free nodes, build the config drive for the first, and reserve it
//!    (`reserve`); a lost race moves to the next, and a few lost races read the pool again;
//! 4. provide a `manageable` node, publish the drive, set `instance_info`, validate, deploy,
//!    and wait for `active`, recording the VM's phase on the node as it goes;
//! 5. on any failure after the reservation, return the node through the same teardown as
//!    delete_vm, then answer.
//!
//! Nothing in Ironic changes before step 3 has a node and a drive built for it (enrolling
//! aside, which the vm_type asks for explicitly).

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::config::{secs, IronicConfig};
use crate::configdrive::ConfigDrive;
use crate::disks::cid::DiskCid;
use crate::error::{CpiError, Result};
use crate::ironic::{wait, Ironic, IronicError, Node, PatchOp};
use crate::pool::cloud_properties::VmCloudProperties;
use crate::pool::confirm::{self, Confirmed};
use crate::pool::record::{disks, record_path, while_owned, Phase, VmRecord, VM_KEY};
use crate::pool::reserve::{reserve, Reservation, Reserve};
use crate::pool::select::{select, Criteria, PoolSnapshot, Selection};
use crate::pool::teardown::{action_happened, Teardown};
use crate::pool::vm_cid::VmCid;
use crate::pool::whoami::{LivenessCheck, Process};
use crate::pool::{enroll, inventory};

/// Candidates tried from one reading of the pool before reading it again: with many
/// concurrent create_vm, a stale listing mostly offers nodes others have taken meanwhile.
const CLAIMS_PER_LISTING: usize = 4;
/// Readings of the pool before giving up to let the director retry.
const MAX_LISTINGS: usize = 4;
/// Config drives that fail to build (networks that do not fit a node's NICs) before giving up.
const DRIVE_FAILURES: usize = 3;

/// The stemcell as Ironic downloads it.
pub struct Image {
    pub url: String,
    pub sha256: String,
    pub disk_format: String,
}

/// One VM to create.
pub struct Plan<'a> {
    pub agent_id: &'a str,
    pub stemcell_cid: &'a str,
    pub props: &'a VmCloudProperties,
    /// Node field that `props.availability_zone` must equal.
    pub az_field: &'a str,
    pub disk_cids: &'a [String],
    pub image: &'a Image,
    /// The vm_type's `clean_on_delete`, recorded with the VM.
    pub clean_on_delete: Option<bool>,
    pub me: Process,
}

/// What the VM needs outside Ironic: its config drive, and where it is published.
pub trait VmFiles {
    /// Build the drive for `node` (before the node is reserved: nothing may change yet).
    fn build(&self, node: &Node, macs: &[String], pxe_macs: &[String]) -> Result<ConfigDrive>;
    /// Write what the VM needs outside Ironic (registry settings, a published drive) and
    /// return Ironic's `configdrive` value.
    fn publish(&self, node_uuid: &str, drive: &ConfigDrive) -> Result<String>;
    /// Remove what `publish` wrote; missing things are fine.
    fn remove(&self, node_uuid: &str);
}

/// A created VM.
pub struct Created {
    pub cid: VmCid,
    pub node: Node,
    /// The director's networks as mapped to the node's NICs (create_vm's v2 result).
    pub networks: Map<String, Value>,
}

pub struct Provisioner<'a> {
    pub api: &'a dyn Ironic,
    pub ironic: &'a IronicConfig,
    pub files: &'a dyn VmFiles,
    pub note: &'a dyn Fn(String),
    /// For the rollback's teardown (`whoami::on_this_host`).
    pub liveness: &'a LivenessCheck,
}

impl Provisioner<'_> {
    pub fn create(&self, plan: &Plan, rng: &mut impl Rng) -> Result<Created> {
        let mut pool = inventory::load(self.api).map_err(|e| failed(e, "listing the node pool"))?;
        (self.note)(format!(
            "pool has {} nodes ({} HTTP requests so far)",
            pool.nodes.len(),
            self.api.request_count()
        ));
        self.enroll_if_asked(plan, &mut pool)?;
        let pinned = pinned_node(&pool, plan.disk_cids)?;

        let vm_id = uuid::Uuid::now_v7().to_string();
        let mut lost = 0usize;
        let mut drive_failures: Vec<String> = Vec::new();
        for listing in 1..=MAX_LISTINGS {
            if listing > 1 {
                pool = inventory::load(self.api)
                    .map_err(|e| failed(e, "listing the node pool again"))?;
            }
            let criteria = Criteria {
                props: plan.props,
                az_field: plan.az_field,
                pinned_node: pinned.as_deref(),
            };
            let selection = select(&pool, &criteria, rng);
            if selection.candidates.is_empty() {
                return Err(no_free_node(
                    plan.props,
                    &selection,
                    pinned.as_deref(),
                    lost,
                ));
            }
            let lost_before = lost;
            for candidate in selection.candidates.iter().take(CLAIMS_PER_LISTING) {
                let drive = match self.files.build(
                    candidate,
                    pool.macs_of(&candidate.uuid),
                    pool.pxe_macs_of(&candidate.uuid),
                ) {
                    Ok(d) => d,
                    Err(e) => {
                        drive_failures.push(format!("node {}: {}", candidate.label(), e.message));
                        if drive_failures.len() >= DRIVE_FAILURES {
                            return Err(drive_error(&drive_failures));
                        }
                        continue;
                    }
                };
                let make_record = |node: &Node| {
                    let mut r = VmRecord::new(
                        &vm_id,
                        plan.agent_id,
                        node,
                        plan.me.clone(),
                        plan.clean_on_delete,
                    );
                    r.stemcell = Some(plan.stemcell_cid.to_string());
                    r
                };
                match reserve(self.api, candidate, &vm_id, make_record)
                    .map_err(|e| failed(e, "reserving a node"))?
                {
                    Reserve::Held(reservation) => {
                        (self.note)(format!(
                            "reserved node {} (was {}) for VM {vm_id}",
                            reservation.node.label(),
                            reservation.record.origin_state
                        ));
                        return self.deploy_or_return(plan, *reservation, drive);
                    }
                    Reserve::Lost(why) => {
                        log::info!("{why}");
                        lost += 1;
                    }
                }
            }
            // Reading the pool again only helps against races; a drive that does not fit is
            // answered at once.
            if lost == lost_before && !drive_failures.is_empty() {
                return Err(drive_error(&drive_failures));
            }
        }
        Err(CpiError::vm_creation_failed(
            format!(
                "lost the race for {lost} free nodes matching {} to concurrent requests, reading \
                 the pool {MAX_LISTINGS} times; try again",
                plan.props.selector_summary()
            ),
            true,
        ))
    }

    fn enroll_if_asked(&self, plan: &Plan, pool: &mut PoolSnapshot) -> Result<()> {
        let Some(params) = &plan.props.ironic_params else {
            return Ok(());
        };
        if plan
            .props
            .macs
            .iter()
            .any(|m| pool.node_with_mac(m).is_some())
        {
            return Ok(());
        }
        let node = enroll::enroll(self.api, self.ironic, params, &plan.props.macs)
            .map_err(|e| CpiError::vm_creation_failed(e.message, true))?;
        (self.note)(format!("enrolled node {} from ironic_params", node.label()));
        pool.add(node, &plan.props.macs);
        Ok(())
    }

    fn deploy_or_return(
        &self,
        plan: &Plan,
        reservation: Reservation,
        drive: ConfigDrive,
    ) -> Result<Created> {
        let cid = reservation.record.cid(&reservation.node.uuid);
        match self.deploy(plan, &reservation, &drive) {
            Ok(node) => Ok(Created {
                cid,
                node,
                networks: drive.networks().clone(),
            }),
            Err(e) => Err(self.roll_back(&reservation, &cid, e)),
        }
    }

    fn deploy(&self, plan: &Plan, held: &Reservation, drive: &ConfigDrive) -> Result<Node> {
        let node = &held.node;
        let uuid = node.uuid.as_str();
        let vm_id = held.record.vm_id.as_str();
        let timeouts = &self.ironic.timeouts;

        if node.state() == "manageable" {
            let started = self.api.now();
            self.action(node, "provide", None)?;
            self.wait(
                uuid,
                "available",
                timeouts.provide,
                "waiting for the node to become available",
            )?;
            (self.note)(format!(
                "provided node {} in {:.1} s",
                node.label(),
                (self.api.now() - started).as_secs_f64()
            ));
        }

        let configdrive = self.files.publish(uuid, drive)?;

        let image = plan.image;
        let mut ops = vec![
            while_owned(vm_id),
            PatchOp::add("/instance_uuid", json!(vm_id)),
            PatchOp::add("/instance_info/image_source", json!(image.url)),
            PatchOp::add("/instance_info/image_os_hash_algo", json!("sha256")),
            PatchOp::add("/instance_info/image_os_hash_value", json!(image.sha256)),
            PatchOp::add("/instance_info/image_disk_format", json!(image.disk_format)),
            PatchOp::add("/instance_info/bosh_agent_id", json!(plan.agent_id)),
        ];
        if let Some(hints) = &plan.props.root_device {
            ops.push(PatchOp::add(
                "/instance_info/root_device",
                Value::Object(hints.clone()),
            ));
        }
        if let Some(caps) = &plan.props.capabilities {
            ops.push(PatchOp::add(
                "/instance_info/capabilities",
                Value::Object(caps.clone()),
            ));
        }
        confirm::change(
            self.api,
            uuid,
            "setting instance_info",
            || self.api.patch_node(uuid, &ops),
            |n| n.instance_info.get("image_source") == Some(&json!(image.url)),
        )
        .map_err(|e| ironic(e, "setting instance_info"))?;

        let validation = self
            .api
            .validate_node(uuid)
            .map_err(|e| ironic(e, "validating the node"))?;
        check_validation(&validation, &node.label())?;

        self.set_phase(node, &held.record, Phase::Deploying)?;
        let started = self.api.now();
        self.action(node, "active", Some(json!({ "configdrive": configdrive })))?;
        let active = self.wait(uuid, "active", timeouts.deploy, "deploying")?;
        self.set_phase(&active, &held.record, Phase::Active)?;
        (self.note)(format!(
            "deployed {} on node {} in {:.1} s ({} HTTP requests to Ironic in all)",
            plan.stemcell_cid,
            active.label(),
            (self.api.now() - started).as_secs_f64(),
            self.api.request_count()
        ));
        Ok(active)
    }

    /// Record the VM's progress (its claim guards the write).
    fn set_phase(&self, node: &Node, record: &VmRecord, phase: Phase) -> Result<()> {
        let uuid = node.uuid.as_str();
        let ops = [
            while_owned(&record.vm_id),
            PatchOp::add(
                format!("{}/phase", record_path(&record.vm_id)),
                json!(phase.as_str()),
            ),
            PatchOp::add("/instance_uuid", json!(record.vm_id)),
        ];
        confirm::change(
            self.api,
            uuid,
            "recording the VM's phase",
            || self.api.patch_node(uuid, &ops),
            |n| VmRecord::read(n).is_some_and(|r| r.vm_id == record.vm_id && r.phase == phase),
        )
        .map(drop)
        .map_err(|e| ironic(e, &format!("recording phase {}", phase.as_str())))
    }

    fn action(&self, node: &Node, target: &str, body: Option<Value>) -> Result<()> {
        let uuid = node.uuid.as_str();
        let from = node.state().to_string();
        confirm::change(
            self.api,
            uuid,
            target,
            || self.api.set_provision_state(uuid, target, body.clone()),
            |n| action_happened(target, &from, n),
        )
        .map(|c| match c {
            Confirmed::Answered(()) => (),
            Confirmed::ReadBack(_) => (),
        })
        .map_err(|e| ironic(e, &format!("'{target}' on node {}", node.label())))
    }

    fn wait(&self, uuid: &str, target: &str, timeout: f64, what: &str) -> Result<Node> {
        wait::provision_state(self.api, &self.ironic.poll, uuid, &[target], secs(timeout))
            .map_err(|e| ironic(e, what))
    }

    /// Return the node through delete_vm's teardown; the answer says whether that worked.
    fn roll_back(&self, held: &Reservation, cid: &VmCid, e: CpiError) -> CpiError {
        let node = held.node.label();
        log::error!("create_vm on node {node} failed, returning the node to the pool: {e}");
        self.files.remove(&held.node.uuid);
        let teardown = Teardown {
            api: self.api,
            ironic: self.ironic,
            me: held.record.claimed_by.clone(),
            may_drop_vm_claim: true,
            force: false,
            liveness: self.liveness,
        };
        // The teardown is safe to run again; a transient failure should not leave the node to
        // the operator when a second try would return it.
        let mut outcome = teardown.run(cid);
        for _ in 0..2 {
            match &outcome {
                Err(te) if te.ok_to_retry => {
                    log::warn!(
                        "returning node {node} failed ({}); trying again",
                        te.message
                    );
                    self.api.sleep(std::time::Duration::from_secs(2));
                    outcome = teardown.run(cid);
                }
                _ => break,
            }
        }
        match outcome {
            Ok(report) => {
                for step in report.steps {
                    (self.note)(step);
                }
                CpiError::vm_creation_failed(
                    format!("{}; node {node} was returned to the pool", e.message),
                    e.ok_to_retry,
                )
            }
            Err(te) => CpiError::vm_creation_failed(
                format!(
                    "{}; returning node {node} to the pool failed too: {}. The node keeps the \
                     record of VM {cid} (extra.{VM_KEY}), so no other VM takes it: \
                     `ironic_cpi pool` shows it, and `ironic_cpi free {}` finishes returning it",
                    e.message, te.message, held.node.uuid
                ),
                e.ok_to_retry,
            ),
        }
    }
}

/// The VM's input does not fit the candidates (networks and NICs): nothing was changed, and
/// retrying cannot help.
fn drive_error(failures: &[String]) -> CpiError {
    CpiError::vm_creation_failed(
        format!(
            "cannot build the VM's config drive for the candidate nodes (nothing was changed \
             in Ironic): {}",
            failures.join("; ")
        ),
        false,
    )
}

/// The node holding the VM's persistent disks: a VM must land where its local disks are. Each
/// disk must be recorded on the node its cid names.
fn pinned_node(pool: &PoolSnapshot, disk_cids: &[String]) -> Result<Option<String>> {
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
        if !disks(node).contains_key(cid) {
            return Err(CpiError::cloud(format!(
                "disk {cid} is not recorded on node {} (the node with MAC {}): it was never \
                 created there, or it was deleted",
                node.label(),
                parsed.mac
            )));
        }
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
    selection: &Selection,
    pinned: Option<&str>,
    lost: usize,
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
    // Matching nodes that are all held may free up; nothing matching cannot, until the
    // operator changes the pool.
    let retry = selection.matching() > 0;
    let races = if lost > 0 {
        format!(" (lost {lost} races to concurrent requests)")
    } else {
        String::new()
    };
    CpiError::vm_creation_failed(
        format!(
            "no free node matches cloud_properties {}: {explanation}{races}",
            props.selector_summary()
        ),
        retry,
    )
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

/// A failure while deploying: another node may do (retryable), except when Ironic refused the
/// request itself (400: the vm_type's own hints or capabilities are wrong).
fn ironic(e: IronicError, what: &str) -> CpiError {
    let retry = !matches!(e, IronicError::BadRequest { .. });
    CpiError::cloud(format!("{what}: {e}")).retryable(retry)
}

/// A failure before any node was reserved: nothing to undo, and another try may succeed, unless
/// the credentials or the TLS trust are wrong.
fn failed(e: IronicError, what: &str) -> CpiError {
    let retry = !e.needs_configuration();
    CpiError::vm_creation_failed(format!("{what}: {e}"), retry)
}
