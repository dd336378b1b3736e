//! The pool as an operator reads it: one line per node, like `baremetal node list`, plus what
//! BOSH put there (who holds the node, instance metadata, disks).
//!
//! The whole pool, streamed: the ports first, kept as a compact map of each node's MACs, then
//! the nodes page by page, each page printed as it arrives (sorted within the page), so that
//! the view of a large fleet never holds its nodes.

use std::collections::HashMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::ironic::{Ironic, Node, NodeQuery, PortQuery};
use crate::mac::normalize_mac;
use crate::pool::orphans::{judge, Holding};
use crate::pool::record::{disks, enrolled_by_cpi, METADATA_KEY};
use crate::pool::select::NODE_FIELDS;

pub struct Row {
    pub uuid: String,
    pub name: String,
    pub state: String,
    pub power: String,
    pub maintenance: bool,
    pub resource_class: String,
    pub macs: String,
    pub held_by: String,
    pub bosh: String,
    pub disks: String,
    /// Why nobody will finish this node's claim, when nobody will.
    pub stale: Option<String>,
}

/// Every node's MACs, comma-separated: all a row needs of the ports.
pub type MacsByNode = HashMap<String, String>;

/// Print the pool to `out` as the pages come: `now` and `stale_after` judge idle claims.
pub fn print(
    api: &dyn Ironic,
    now: SystemTime,
    stale_after: Duration,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut macs = MacsByNode::new();
    api.port_pages(
        &PortQuery {
            fields: vec!["address".into(), "node_uuid".into()],
            ..Default::default()
        },
        &mut |page| {
            for port in page {
                let mac = normalize_mac(&port.address).unwrap_or(port.address);
                let list = macs.entry(port.node_uuid).or_default();
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(&mac);
            }
            ControlFlow::Continue(())
        },
    )
    .map_err(|e| format!("listing the ports: {e}"))?;
    let mut table = Table::default();
    let mut written = Ok(());
    api.node_pages(
        &NodeQuery {
            fields: NODE_FIELDS.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        },
        &mut |page| {
            written = table.page(&rows(&page, &macs, now, stale_after), out);
            if written.is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        },
    )
    .map_err(|e| format!("listing the nodes: {e}"))?;
    written
        .and_then(|()| table.finish(out))
        .map_err(|e| format!("writing the table: {e}"))
}

/// Rows for one page of nodes at `now`, sorted by name; claims idle for `stale_after` are
/// marked stale.
pub fn rows(nodes: &[Node], macs: &MacsByNode, now: SystemTime, stale_after: Duration) -> Vec<Row> {
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by(|a, b| (&a.name, &a.uuid).cmp(&(&b.name, &b.uuid)));
    nodes
        .into_iter()
        .map(|n| row(n, macs, now, stale_after))
        .collect()
}

fn row(n: &Node, macs: &MacsByNode, now: SystemTime, stale_after: Duration) -> Row {
    let state = match &n.target_provision_state {
        Some(t) => format!("{} -> {t}", n.state()),
        None => n.state().to_string(),
    };
    let holding = judge(n, now, stale_after, &crate::pool::whoami::on_this_host);
    let mut held_by = match &holding {
        Holding::Free => "-".into(),
        Holding::Vm { record, .. } => {
            format!(
                "vm {} agent {} ({})",
                short(&record.vm_id),
                record.agent_id,
                record.phase.as_str()
            )
        }
        Holding::Unreadable => "unreadable bosh_vm record".into(),
        Holding::Bare { instance_uuid, .. } => {
            format!("claim {} (no VM record)", short(instance_uuid))
        }
    };
    let stale = holding.stale_reason().map(str::to_string);
    if stale.is_some() {
        held_by.push_str(" STALE");
    }
    let meta = n.extra.get(METADATA_KEY);
    let text = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    let mut bosh = match (
        text("deployment"),
        text("instance_group").or(text("job")),
        text("index"),
    ) {
        (Some(d), Some(g), Some(i)) => format!("{d}/{g}/{i}"),
        (Some(d), _, _) if text("compiling").is_some() => format!("{d}/compiling"),
        (Some(d), _, _) => d.to_string(),
        _ => String::new(),
    };
    if enrolled_by_cpi(n) {
        bosh = if bosh.is_empty() {
            "enrolled by CPI".into()
        } else {
            format!("{bosh} (enrolled by CPI)")
        };
    }
    let records = disks(n);
    let attached = records
        .values()
        .filter(|d| d.get("attached_to").is_some_and(Value::is_string))
        .count();
    let disks = if records.is_empty() {
        "-".into()
    } else {
        format!("{} ({attached} attached)", records.len())
    };
    Row {
        uuid: n.uuid.clone(),
        name: n.name.clone().unwrap_or_default(),
        state,
        power: n.power_state.clone().unwrap_or_else(|| "-".into()),
        maintenance: n.maintenance,
        resource_class: n.resource_class.clone().unwrap_or_default(),
        macs: macs
            .get(&n.uuid)
            .map(|list| {
                let mut sorted: Vec<&str> = list.split(',').collect();
                sorted.sort_unstable();
                sorted.join(",")
            })
            .unwrap_or_default(),
        held_by,
        bosh: if bosh.is_empty() { "-".into() } else { bosh },
        disks,
        stale,
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

const HEADER: [&str; 10] = [
    "UUID", "NAME", "STATE", "POWER", "MAINT", "CLASS", "MACS", "HELD BY", "BOSH", "DISKS",
];

/// A plain-text table written page by page: columns as wide as the widest cell seen so far (a
/// later page may widen them), the count and the stale claims at the end.
#[derive(Default)]
pub struct Table {
    widths: [usize; 10],
    started: bool,
    nodes: usize,
    /// Stale claims only, by node: the operator's to-do list, printed last.
    stale: Vec<(String, String)>,
}

impl Table {
    pub fn page(&mut self, rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
        let cells: Vec<[String; 10]> = rows
            .iter()
            .map(|r| {
                // Every field comes from Ironic, where anyone who may edit a node writes what
                // they like: escape control characters so no field can drive the terminal.
                [
                    r.uuid.as_str(),
                    r.name.as_str(),
                    r.state.as_str(),
                    r.power.as_str(),
                    if r.maintenance { "yes" } else { "no" },
                    r.resource_class.as_str(),
                    r.macs.as_str(),
                    r.held_by.as_str(),
                    r.bosh.as_str(),
                    r.disks.as_str(),
                ]
                .map(crate::redact::control_chars)
            })
            .collect();
        if !self.started {
            self.widths = HEADER.map(str::len);
        }
        for row in &cells {
            for (w, c) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        if !self.started {
            self.started = true;
            self.line(&HEADER, out)?;
        }
        for row in &cells {
            let fields: Vec<&str> = row.iter().map(String::as_str).collect();
            self.line(&fields, out)?;
        }
        self.nodes += rows.len();
        self.stale.extend(rows.iter().filter_map(|r| {
            r.stale
                .as_ref()
                .map(|why| (r.uuid.clone(), crate::redact::control_chars(why)))
        }));
        Ok(())
    }

    fn line(&self, fields: &[&str], out: &mut dyn Write) -> std::io::Result<()> {
        let parts: Vec<String> = fields
            .iter()
            .zip(self.widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        writeln!(out, "{}", parts.join("  ").trim_end())
    }

    /// The count, and the stale claims with what to do about them.
    pub fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if !self.started {
            self.started = true;
            self.line(&HEADER, out)?;
        }
        write!(out, "{} nodes", self.nodes)?;
        if !self.stale.is_empty() {
            write!(
                out,
                "\n\n{} stale claim(s): nobody will finish them; `ironic_cpi -c CONFIG free NODE` \
                 returns a node to the pool",
                self.stale.len()
            )?;
            for (uuid, why) in &self.stale {
                write!(out, "\n  {uuid}: {why}")?;
            }
        }
        writeln!(out)
    }
}

/// The whole table for `rows` at once.
pub fn render(rows: &[Row]) -> String {
    let mut out = Vec::new();
    let mut table = Table::default();
    // Writing to memory cannot fail.
    let _ = table
        .page(rows, &mut out)
        .and_then(|()| table.finish(&mut out));
    String::from_utf8_lossy(&out).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_holder_metadata_and_disks() {
        let owner = Node {
            provision_state: Some("available".into()),
            ..Default::default()
        };
        let record = crate::pool::record::VmRecord::new(
            "i-1",
            "agent-123456789",
            &owner,
            crate::pool::whoami::Process::current(None),
            None,
        )
        .in_phase(crate::pool::record::Phase::Active)
        .container();
        let node = Node {
            uuid: "u1".into(),
            name: Some("router-0".into()),
            provision_state: Some("active".into()),
            power_state: Some("power on".into()),
            instance_uuid: Some("i-1".into()),
            extra: json!({"bosh_vm": record, "bosh_metadata": {"deployment": "cf", "instance_group": "router", "index": "0"},
                          "bosh_disks": {"disk-1": {"attached_to": "i-1"}, "disk-2": {}}})
            .as_object()
            .unwrap()
            .clone(),
            ..Default::default()
        };
        let macs: MacsByNode = [(
            "u1".to_string(),
            "52:54:00:00:00:02,52:54:00:00:00:01".to_string(),
        )]
        .into();
        let table = render(&rows(
            &[node],
            &macs,
            SystemTime::now(),
            Duration::from_secs(900),
        ));
        for want in [
            "router-0",
            "active",
            "agent agent-123456789 (active)",
            "cf/router/0",
            "2 (1 attached)",
            "52:54:00:00:00:01,52:54:00:00:00:02",
            "1 nodes",
        ] {
            assert!(table.contains(want), "{want} missing in\n{table}");
        }
    }

    #[test]
    fn control_characters_from_ironic_are_escaped() {
        let owner = Node {
            provision_state: Some("available".into()),
            ..Default::default()
        };
        let record = crate::pool::record::VmRecord::new(
            "i-1",
            "evil\u{1b}[2J\nforged row",
            &owner,
            crate::pool::whoami::Process::current(None),
            None,
        )
        .container();
        let node = Node {
            uuid: "u1".into(),
            name: Some("name\u{7}\r".into()),
            provision_state: Some("active".into()),
            instance_uuid: Some("i-1".into()),
            extra: json!({"bosh_vm": record}).as_object().unwrap().clone(),
            ..Default::default()
        };
        let table = render(&rows(
            &[node],
            &MacsByNode::new(),
            SystemTime::now(),
            Duration::from_secs(900),
        ));
        assert!(!table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\r'));
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.contains("evil\\u{1b}[2J\\nforged row"), "{table}");
    }

    #[test]
    fn pages_are_written_as_they_come_and_stale_claims_summed_up_at_the_end() {
        let now = SystemTime::now();
        let free = |uuid: &str, name: &str| Node {
            uuid: uuid.into(),
            name: Some(name.into()),
            provision_state: Some("available".into()),
            ..Default::default()
        };
        // A bare claim nobody finished: stale at once with a zero threshold.
        let mut bare = free("u3", "claimed-long-ago");
        bare.instance_uuid = Some("0193aaaa-0000-7000-8000-000000000001".into());
        bare.provision_updated_at = Some("2001-01-01T00:00:00+00:00".into());
        let macs = MacsByNode::new();
        let mut out = Vec::new();
        let mut table = Table::default();
        table
            .page(
                &rows(
                    &[free("u2", "b"), free("u1", "a")],
                    &macs,
                    now,
                    Duration::ZERO,
                ),
                &mut out,
            )
            .unwrap();
        let first = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            first.lines().count(),
            3,
            "header and two rows at once:\n{first}"
        );
        assert!(
            first.lines().nth(1).unwrap().starts_with("u1"),
            "sorted in the page"
        );
        table
            .page(&rows(&[bare], &macs, now, Duration::ZERO), &mut out)
            .unwrap();
        table.finish(&mut out).unwrap();
        let all = String::from_utf8(out).unwrap();
        assert!(all.starts_with(&first), "earlier pages stay as written");
        assert!(all.contains("3 nodes"), "{all}");
        assert!(
            all.contains("1 stale claim(s)") && all.contains("\n  u3: "),
            "{all}"
        );
    }
}
