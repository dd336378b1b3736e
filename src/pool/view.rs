//! The pool as an operator reads it: one line per node, like `baremetal node list`, plus what
//! BOSH put there (who holds the node, instance metadata, disks).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::ironic::Node;
use crate::pool::orphans::{judge, Holding};
use crate::pool::record::{disks, enrolled_by_cpi, METADATA_KEY};
use crate::pool::select::PoolSnapshot;

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

/// The pool's rows at `now`; claims idle for `stale_after` are marked stale.
pub fn rows(pool: &PoolSnapshot, now: SystemTime, stale_after: Duration) -> Vec<Row> {
    let mut nodes: Vec<&Node> = pool.nodes.iter().collect();
    nodes.sort_by(|a, b| (&a.name, &a.uuid).cmp(&(&b.name, &b.uuid)));
    nodes
        .into_iter()
        .map(|n| row(pool, n, now, stale_after))
        .collect()
}

fn row(pool: &PoolSnapshot, n: &Node, now: SystemTime, stale_after: Duration) -> Row {
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
        macs: pool.macs_of(&n.uuid).join(","),
        held_by,
        bosh: if bosh.is_empty() { "-".into() } else { bosh },
        disks,
        stale,
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// A plain-text table with aligned columns.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "UUID", "NAME", "STATE", "POWER", "MAINT", "CLASS", "MACS", "HELD BY", "BOSH", "DISKS",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            // Every field comes from Ironic, where anyone who may edit a node writes what they
            // like: escape control characters so no field can drive the terminal.
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
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, fields: &[&str]| {
        let parts: Vec<String> = fields
            .iter()
            .zip(widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &header);
    for row in &cells {
        let fields: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &fields);
    }
    let _ = write!(out, "{} nodes", rows.len());
    let stale: Vec<&Row> = rows.iter().filter(|r| r.stale.is_some()).collect();
    if !stale.is_empty() {
        let _ = write!(
            out,
            "\n\n{} stale claim(s): nobody will finish them; `ironic_cpi -c CONFIG free NODE` \
             returns a node to the pool",
            stale.len()
        );
        for r in stale {
            let _ = write!(
                out,
                "\n  {}: {}",
                r.uuid,
                r.stale.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ironic::Port;
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
        let pool = PoolSnapshot::new(
            vec![node],
            vec![Port {
                address: "52:54:00:00:00:01".into(),
                node_uuid: "u1".into(),
                ..Default::default()
            }],
        );
        let table = render(&rows(&pool, SystemTime::now(), Duration::from_secs(900)));
        for want in [
            "router-0",
            "active",
            "agent agent-123456789 (active)",
            "cf/router/0",
            "2 (1 attached)",
            "52:54:00:00:00:01",
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
            &PoolSnapshot::new(vec![node], vec![]),
            SystemTime::now(),
            Duration::from_secs(900),
        ));
        assert!(!table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\r'));
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.contains("evil\\u{1b}[2J\\nforged row"), "{table}");
    }
}
