//! Putting a VM on a node, top to bottom:
//!
//! 1. find the nodes the VM may take: the owners of `cloud_properties.macs` (enrolling one if
//!    the vm_type says so), the node holding the VM's persistent disks (they pin the VM), or
//!    else the free nodes Ironic lists for the selection (`select::free_queries`), keeping the
//!    best few while the pages stream;
//! 2. read the ports of the best candidate, build its config drive, and reserve it (`reserve`);
//!    a lost race moves to the next, and a few lost races read the free nodes again;
//! 3. provide a `manageable` node, publish the drive, set `instance_info`, validate, deploy,
//!    and wait for `active`, recording the VM's phase on the node as it goes;
//! 4. on any failure after the reservation, return the node through the same teardown as
//!    delete_vm, then answer.
//!
//! Nothing in Ironic changes before step 2 has a node and a drive built for it (enrolling
//! aside, which the vm_type asks for explicitly). The whole pool is read only when no node is
//! free, to say why.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::config::{IronicConfig, Seconds};
use crate::configdrive::ConfigDrive;
use crate::disks::placement;
use crate::error::{self, CpiError, Result, Stage};
use crate::ironic::{wait, Ironic, IronicError, Node, NodeQuery, PatchOp, PortQuery};
use crate::mac::normalize_mac;
use crate::pool::confirm;
use crate::pool::enroll;
use crate::pool::record::{record_path, while_owned, Phase, VmRecord, VM_KEY};
use crate::pool::reserve::{reserve, Reservation, Reserve};
use crate::pool::select::{free_queries, Criteria, Shortlist, Tally, NODE_FIELDS, PORT_FIELDS};
use crate::pool::teardown::Teardown;
use crate::pool::vm_cid::VmCid;
use crate::pool::whoami::{LivenessCheck, Process};
use crate::vm_type::VmCloudProperties;

/// Candidates kept from one reading of the free nodes, and tried before reading them again:
/// with many concurrent create_vm, a stale listing mostly offers nodes others have taken
/// meanwhile.
const CLAIMS_PER_LISTING: usize = 4;
/// Readings of the free nodes before giving up to let the director retry.
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
        let mut mac_nodes = self.nodes_with_macs(&plan.props.macs)?;
        self.enroll_if_asked(plan, &mut mac_nodes)?;
        let mut pinned = placement::node_of(self.api, plan.disk_cids)?;
        let pinned_uuid = pinned.as_ref().map(|n| n.uuid.clone());
        let criteria = Criteria {
            props: plan.props,
            az_field: plan.az_field,
            pinned_node: pinned_uuid.as_deref(),
            mac_nodes: &mac_nodes,
        };

        let vm_id = uuid::Uuid::now_v7().to_string();
        let mut lost = 0usize;
        let mut drive_failures: Vec<String> = Vec::new();
        for listing in 1..=MAX_LISTINGS {
            let candidates = self
                .shortlist(&criteria, pinned.take(), rng)
                .map_err(|e| failed(e, "listing the free nodes"))?;
            (self.note)(format!(
                "{} candidates from reading {listing} of the free nodes ({} HTTP requests so far)",
                candidates.len(),
                self.api.request_count()
            ));
            if candidates.is_empty() {
                return Err(self.no_free_node(&criteria, lost));
            }
            let lost_before = lost;
            for candidate in &candidates {
                let (macs, pxe_macs) = self.macs_of(candidate).map_err(|e| {
                    failed(e, &format!("listing the ports of {}", candidate.label()))
                })?;
                let drive = match self.files.build(candidate, &macs, &pxe_macs) {
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
            // Reading the free nodes again only helps against races; a drive that does not fit
            // is answered at once.
            if lost == lost_before && !drive_failures.is_empty() {
                return Err(drive_error(&drive_failures));
            }
        }
        Err(CpiError::vm_creation_failed(
            format!(
                "lost the race for {lost} free nodes matching {} to concurrent requests, reading \
                 the free nodes {MAX_LISTINGS} times; try again",
                plan.props.selector_summary()
            ),
            true,
        ))
    }

    /// The best few candidates of one reading: the node holding the VM's disks (`known` when it
    /// was just read), or the owners of the requested MACs, or the free nodes Ironic lists for
    /// the selection. Every node is checked in memory against every criterion.
    fn shortlist(
        &self,
        c: &Criteria,
        known: Option<Node>,
        rng: &mut impl Rng,
    ) -> std::result::Result<Vec<Node>, IronicError> {
        let mut list = Shortlist::new(CLAIMS_PER_LISTING);
        let mut offer = |node: Node| {
            if let Err(why) = list.offer(node, c, rng) {
                log::debug!("passed over: {why:?}");
            }
        };
        if let Some(pinned) = c.pinned_node {
            match known.map_or_else(|| self.api.get_node(pinned), Ok) {
                Ok(node) => offer(node),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        } else if !c.props.macs.is_empty() {
            for uuid in c.mac_nodes {
                match self.api.get_node(uuid) {
                    Ok(node) => offer(node),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            for q in free_queries(c, self.api.microversion_in_use()) {
                self.api.node_pages(&q, &mut |page| {
                    page.into_iter().for_each(&mut offer);
                    ControlFlow::Continue(())
                })?;
            }
        }
        Ok(list.into_nodes())
    }

    /// The node's MACs, and those it boots from (`pxe_enabled`), normalized and sorted.
    fn macs_of(&self, node: &Node) -> std::result::Result<(Vec<String>, Vec<String>), IronicError> {
        let ports = self.api.list_ports(&PortQuery {
            node_uuid: Some(node.uuid.clone()),
            fields: PORT_FIELDS.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })?;
        let (mut macs, mut pxe) = (Vec::new(), Vec::new());
        for port in ports {
            let mac = normalize_mac(&port.address).unwrap_or(port.address);
            if port.pxe_enabled == Some(true) {
                pxe.push(mac.clone());
            }
            macs.push(mac);
        }
        macs.sort();
        pxe.sort();
        Ok((macs, pxe))
    }

    /// The nodes that own any of `macs`, by their ports (one request per MAC).
    fn nodes_with_macs(&self, macs: &[String]) -> Result<BTreeSet<String>> {
        let mut nodes = BTreeSet::new();
        for mac in macs {
            let ports = self
                .api
                .list_ports(&PortQuery {
                    address: Some(mac.clone()),
                    fields: vec!["address".into(), "node_uuid".into()],
                    ..Default::default()
                })
                .map_err(|e| failed(e, &format!("looking up the node with MAC {mac}")))?;
            nodes.extend(ports.into_iter().map(|p| p.node_uuid));
        }
        Ok(nodes)
    }

    fn enroll_if_asked(&self, plan: &Plan, mac_nodes: &mut BTreeSet<String>) -> Result<()> {
        let Some(params) = &plan.props.ironic_params else {
            return Ok(());
        };
        if !mac_nodes.is_empty() {
            return Ok(());
        }
        let node = enroll::enroll(self.api, self.ironic, params, &plan.props.macs)
            .map_err(|e| CpiError::vm_creation_failed(e.message.clone(), true).because(e))?;
        (self.note)(format!("enrolled node {} from ironic_params", node.label()));
        mac_nodes.insert(node.uuid);
        Ok(())
    }

    /// No candidate: read the whole pool once more, page by page, to say why and whether the
    /// director may retry (matching nodes that are all held may free up).
    fn no_free_node(&self, c: &Criteria, lost: usize) -> CpiError {
        let mut tally = Tally::default();
        let everything = NodeQuery {
            fields: NODE_FIELDS.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        let counted = self.api.node_pages(&everything, &mut |page| {
            page.iter().for_each(|n| tally.count(n, c));
            ControlFlow::Continue(())
        });
        let props = c.props;
        if let Err(e) = counted {
            return CpiError::vm_creation_failed(
                format!(
                    "no free node matches cloud_properties {}; reading the pool to say why \
                     failed: {e}",
                    props.selector_summary()
                ),
                !e.needs_configuration(),
            );
        }
        let explanation = tally.explain();
        if let Some(node) = c.pinned_node {
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
        let retry = tally.matching() > 0;
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
        // The phase goes with instance_info, one request fewer: from here the VM is being
        // deployed (validate, deploy, wait), and nothing tells these steps apart but the node.
        let mut ops = vec![
            while_owned(vm_id),
            PatchOp::add(
                format!("{}/phase", record_path(vm_id)),
                json!(Phase::Deploying.as_str()),
            ),
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
            |n| {
                n.instance_info.get("image_source") == Some(&json!(image.url))
                    && VmRecord::read(n).is_some_and(|r| r.phase == Phase::Deploying)
            },
        )
        .map_err(|e| ironic(e, "setting instance_info"))?;

        let validation = self
            .api
            .validate_node(uuid)
            .map_err(|e| ironic(e, "validating the node"))?;
        check_validation(&validation, &node.label())?;

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
        confirm::provision_action(self.api, node, target, body)
            .map_err(|e| ironic(e, &format!("'{target}' on node {}", node.label())))
    }

    /// Wait for the transition an action of this call just started.
    fn wait(&self, uuid: &str, target: &str, timeout: Seconds, what: &str) -> Result<Node> {
        wait::provision_state_after_action(
            self.api,
            &self.ironic.poll,
            uuid,
            &[target],
            timeout.get(),
        )
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

fn ironic(e: IronicError, what: &str) -> CpiError {
    error::from_ironic(e, Stage::Deploying, what)
}

fn failed(e: IronicError, what: &str) -> CpiError {
    error::from_ironic(e, Stage::BeforeClaim, what)
}
