//! Benchmark: how much later than Ironic's own transition the client's waits return, with the
//! default poll policy (first poll at once, then 0.25 s growing by 1.5x, 20% jitter).
//!
//! ```text
//! cargo run --release --example wait_overhead -- [ROUNDS]     # starts its own Ironic lab
//! ```
//!
//! Each round deploys a fake-hardware node (`active`) and undeploys it (`available`); the
//! overhead is the time the wait returned minus the node's `provision_updated_at`, the moment
//! Ironic recorded the final state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::time::{Duration, SystemTime};

use ironic_cpi::config::Config;
use ironic_cpi::ironic::{IronicClient, PatchOp};
use ironic_cpi_testkit::ironic::{enroll_node, lab_mac, IronicLab, IronicLabOptions, NodeSpec};
use serde_json::json;

fn main() {
    if let Err(e) = run() {
        eprintln!("wait_overhead: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("ROUNDS must be a number, not '{a}'"))?,
        None => 10,
    };
    let lab = IronicLab::start(IronicLabOptions::default())?;
    let cfg = Config::from_value(json!({"ironic": {"url": lab.url}})).map_err(|e| e.to_string())?;
    let c = IronicClient::new(&cfg.ironic).map_err(|e| e.to_string())?;
    let fail = |e: ironic_cpi::ironic::IronicError| e.to_string();
    let mut spec = NodeSpec::new("bench-wait");
    spec.macs = vec![lab_mac(0xbe, 0, 0)];
    let node = enroll_node(&c, &spec).map_err(fail)?;
    c.patch_node(
        &node.uuid,
        &[PatchOp::add(
            "/instance_info/image_source",
            json!("http://127.0.0.1:1/i.qcow2"),
        )],
    )
    .map_err(fail)?;
    let (mut deploy, mut undeploy) = (vec![], vec![]);
    for _ in 0..rounds {
        let started = SystemTime::now();
        c.set_provision_state(&node.uuid, "active", None)
            .map_err(fail)?;
        let n = c
            .wait_for_provision_state(&node.uuid, &["active"], Duration::from_secs(60))
            .map_err(fail)?;
        deploy.push(measure(started, &n.provision_updated_at)?);
        let started = SystemTime::now();
        c.set_provision_state(&node.uuid, "deleted", None)
            .map_err(fail)?;
        let n = c
            .wait_for_provision_state(&node.uuid, &["available"], Duration::from_secs(60))
            .map_err(fail)?;
        undeploy.push(measure(started, &n.provision_updated_at)?);
    }
    report("deploy -> active", &mut deploy);
    report("undeploy -> available", &mut undeploy);
    println!("HTTP requests: {}", c.request_count());
    Ok(())
}

/// (Ironic's transition time, the wait's overhead) in seconds.
fn measure(started: SystemTime, updated: &Option<String>) -> Result<(f64, f64), String> {
    let returned = SystemTime::now();
    let stamp = updated.as_deref().ok_or("no provision_updated_at")?;
    let utc = stamp.replace("+00:00", "Z");
    let utc = if utc.ends_with('Z') {
        utc
    } else {
        format!("{utc}Z")
    };
    let at = humantime::parse_rfc3339(&utc).map_err(|e| format!("{stamp}: {e}"))?;
    let secs = |a: SystemTime, b: SystemTime| match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    Ok((secs(at, started), secs(returned, at)))
}

fn report(what: &str, samples: &mut [(f64, f64)]) {
    samples.sort_by(|a, b| a.1.total_cmp(&b.1));
    let n = samples.len();
    if n == 0 {
        return;
    }
    let mean = |f: fn(&(f64, f64)) -> f64| samples.iter().map(f).sum::<f64>() / n as f64;
    println!(
        "{what}: {n} rounds, Ironic transition mean {:.3} s; wait overhead min {:.3} / median {:.3} / max {:.3} s (mean {:.3} s)",
        mean(|s| s.0),
        samples[0].1,
        samples[n / 2].1,
        samples[n - 1].1,
        mean(|s| s.1),
    );
}
