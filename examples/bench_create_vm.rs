//! Benchmark: create_vm through the real `ironic_cpi` binary against the real Ironic
//! (fake-hardware), as the director runs it. Prints figures; asserts nothing.
//!
//! 1. An idle pool of 5 nodes: CYCLES create_vm + delete_vm cycles, median wall time of each.
//! 2. 1,000 more nodes with 2 ports each (enrolled by `examples/list_pool` against this lab,
//!    which also prints what listing them costs), then one create_vm: wall time and the HTTP
//!    requests it sent, from the response's `log` ("N HTTP requests to Ironic in all").
//! 3. Peak RSS of every CPI process (through /usr/bin/time).
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/bench_create_vm [CYCLES] [POOL_NODES]
//! ```
//! Uses the release binaries next to this example (`target/release/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use ironic_cpi_testkit::cpi::{make_stemcell_image, CallOutcome, CpiLab, CpiLabOptions};
use ironic_cpi_testkit::figures::median;
use ironic_cpi_testkit::ironic::{enroll_node, lab_mac, IronicLabOptions, NodeSpec};

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_create_vm: {e}");
        std::process::exit(1);
    }
}

fn arg(i: usize, default: usize) -> Result<usize, String> {
    match std::env::args().nth(i) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("argument {i} must be a number, not '{a}'")),
    }
}

fn release_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no current exe: {e}"))?;
    // target/release/examples/bench_create_vm -> target/release
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| "cannot find target/release".to_string())
}

fn ok(out: &CallOutcome) -> Result<&Value, String> {
    if out.response["error"].is_null() {
        Ok(out.result())
    } else {
        Err(format!("CPI call failed: {}\n{}", out.stdout, out.stderr))
    }
}

fn run() -> Result<(), String> {
    let cycles = arg(1, 10)?.max(1);
    let pool_nodes = arg(2, 1000)?;
    let release = release_dir()?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The CPI runs under /usr/bin/time so that each process's peak RSS is recorded.
    let rss_file = work.path().join("rss.txt");
    let wrapper = work.path().join("ironic_cpi");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/time -a -o '{}' -f %M '{}' \"$@\"\n",
            rss_file.display(),
            release.join("ironic_cpi").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .map_err(|e| e.to_string())?;

    let lab = CpiLab::start(CpiLabOptions {
        ironic: IronicLabOptions::default(),
        registry: false,
        publish_configdrive: false,
        cpi_binary: wrapper,
        server_binary: Some(release.join("ironic_cpi_server")),
    })?;
    let image = make_stemcell_image(work.path(), 1024 * 1024, true).map_err(|e| e.to_string())?;
    let stemcell = ok(&lab.call(
        "create_stemcell",
        json!([image.to_str().unwrap_or_default(), {"name": "s", "version": "1", "disk_format": "qcow2"}]),
        2,
        None,
    ))?
    .as_str()
    .unwrap_or_default()
    .to_string();

    // Peak RSS of the CPI process that ran last.
    let last_rss = || -> u64 {
        std::fs::read_to_string(&rss_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    let stemcell_rss = last_rss();
    let client = lab.client().map_err(|e| e.to_string())?;
    for i in 0..5u16 {
        let mut spec = NodeSpec::new(format!("idle-{i}"));
        spec.resource_class = Some("idle".into());
        spec.macs = vec![lab_mac(0x71, i, 0), lab_mac(0x71, i, 1)];
        enroll_node(&client, &spec).map_err(|e| e.to_string())?;
    }
    let create = || {
        let out = lab.call(
            "create_vm",
            json!([uuid::Uuid::new_v4().to_string(), stemcell, {"resource_class": "idle"},
                   {"default": {"type": "dynamic", "cloud_properties": {}}}, [], {"bosh": {}}]),
            2,
            Some(3),
        );
        let vm = ok(&out)?[0].as_str().unwrap_or_default().to_string();
        Ok::<_, String>((vm, out))
    };
    let requests_of = |out: &CallOutcome| -> String {
        let log = out.response["log"].as_str().unwrap_or_default();
        log.split(" HTTP requests to Ironic in all")
            .next()
            .and_then(|s| s.rsplit('(').next())
            .unwrap_or("?")
            .to_string()
    };

    let (mut creates, mut deletes) = (Vec::new(), Vec::new());
    let mut idle_requests = String::new();
    let mut idle_rss = 0;
    for _ in 0..cycles {
        let (vm, out) = create()?;
        creates.push(out.elapsed);
        idle_requests = requests_of(&out);
        idle_rss = idle_rss.max(last_rss());
        let del = lab.call("delete_vm", json!([vm]), 2, Some(3));
        ok(&del)?;
        deletes.push(del.elapsed);
    }
    println!(
        "create_vm idle 5-node pool: median {:.3} s, min {:.3} s, max {:.3} s over {cycles} cycles ({idle_requests} requests)",
        median(&creates).as_secs_f64(),
        creates.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64(),
        creates.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64(),
    );
    println!(
        "delete_vm idle 5-node pool: median {:.3} s over {cycles} cycles",
        median(&deletes).as_secs_f64()
    );

    if pool_nodes > 0 {
        let out = Command::new(release.join("examples/list_pool"))
            .arg(pool_nodes.to_string())
            .env("IRONIC_URL", &lab.ironic.url)
            .output()
            .map_err(|e| format!("examples/list_pool: {e}"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("list_pool {pool_nodes}: {line}");
        }
        if !out.status.success() {
            return Err(format!(
                "list_pool failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let (vm, out) = create()?;
        println!(
            "create_vm with {} nodes in Ironic: {:.3} s, {} HTTP requests to Ironic, peak RSS {} KiB",
            pool_nodes + 5,
            out.elapsed.as_secs_f64(),
            requests_of(&out),
            last_rss()
        );
        ok(&lab.call("delete_vm", json!([vm]), 2, Some(3)))?;
    }

    println!("ironic_cpi create_stemcell (1 MiB image) peak RSS: {stemcell_rss} KiB");
    println!("ironic_cpi create_vm (idle pool) peak RSS: {idle_rss} KiB");
    let rss: Vec<u64> = std::fs::read_to_string(&rss_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    println!(
        "ironic_cpi peak RSS over {} processes: max {} KiB",
        rss.len(),
        rss.iter().max().copied().unwrap_or(0)
    );
    println!(
        "ironic_cpi_server peak RSS (lab server, after the run): {} KiB",
        lab.server.peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}
