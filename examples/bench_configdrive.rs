//! How long a typical config drive takes to build, and how big it is next to the reference
//! builder (OpenStack's `genisoimage` command line, then `gzip -9`).
//!
//! Run: `cargo run --release --example bench_configdrive [ITERATIONS]`
//!
//! Typical drive: 3 director networks on a 4-NIC node (one loopback placeholder), an `env` as
//! the director sends it (mbus CA, certificate and private key, password hash, blobstores),
//! two public keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironic_cpi::config::{AgentConfig, Defaults, Secret};
use ironic_cpi::configdrive::{build, ConfigDrive, DiskLayout, DriveInput};
use serde_json::{json, Map, Value};

const ENV: &str = include_str!("../tests/fixtures/configdrive/env_with_mbus_cert.json");

fn main() {
    let iterations: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 2000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: bench_configdrive [ITERATIONS]");
            std::process::exit(2);
        }
    };

    let env: Value = serde_json::from_str(ENV).expect("fixture env is JSON");
    let networks = as_map(json!({
        "public": {
            "type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "prefix": "24",
            "gateway": "10.0.0.1", "dns": ["10.0.0.2", "10.0.0.3"], "default": ["dns", "gateway"],
            "cloud_properties": {"macs": ["52:54:00:00:00:0b"]}
        },
        "storage": {
            "type": "manual", "ip": "192.168.50.7", "netmask": "255.255.255.0", "prefix": "24",
            "gateway": "192.168.50.1", "dns": ["192.168.50.2"], "cloud_properties": {}
        },
        "backend": {"type": "dynamic", "cloud_properties": {}},
    }));
    let macs: Vec<String> = ["0a", "0b", "0c", "0d"]
        .iter()
        .map(|s| format!("52:54:00:00:00:{s}"))
        .collect();
    let agent = AgentConfig {
        mbus: Some(Secret::new("nats://nats:nats-password@10.0.0.6:4222")),
        ntp: vec!["0.pool.ntp.org".into(), "1.pool.ntp.org".into()],
        blobstore: Some(
            json!({"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250"}}),
        ),
    };
    let defaults = Defaults {
        public_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm3M0dLkq4b6Zc0q0t4m1Gq2vU1kq3Q0y4dQnE0f0aA ops@example".into(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBv0lW4uJ3b8j1n2kq0p9s8d7f6g5h4j3k2l1z0x9c8v oncall@example".into(),
        ],
        ..Defaults::default()
    };
    let persistent = Map::new();
    let input = DriveInput {
        agent_id: "2d6c1a0e-4a8b-4b2c-9f7e-1c1e6f2b9a10",
        node_uuid: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        node_macs: &macs,
        pxe_macs: &[],
        networks: &networks,
        env: &env,
        agent: &agent,
        defaults: &defaults,
        disks: &DiskLayout::from_defaults(&defaults),
        persistent_disks: &persistent,
        registry_endpoint: None,
    };

    let build_once = || build(&input).unwrap_or_else(|e| panic!("build failed: {e}"));
    for _ in 0..iterations.min(200) {
        std::hint::black_box(build_once());
    }
    let mut times = Vec::with_capacity(iterations);
    let mut drive = None;
    for _ in 0..iterations {
        let t = Instant::now();
        let d = build_once();
        times.push(t.elapsed());
        drive = Some(std::hint::black_box(d));
    }
    let drive = drive.expect("at least one iteration");
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;

    println!(
        "build (settings + user/meta/network data + ISO + gzip -9), {iterations} iterations{}:",
        if cfg!(debug_assertions) {
            " [DEBUG BUILD: use --release]"
        } else {
            ""
        }
    );
    println!(
        "  median {:>8.3} ms   p95 {:>8.3} ms   mean {:>8.3} ms   min {:>8.3} ms   max {:>8.3} ms",
        ms(pct(0.5)),
        ms(pct(0.95)),
        ms(mean),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    let user_data = drive
        .file(ironic_cpi::configdrive::EC2_USER_DATA)
        .map_or(0, <[u8]>::len);
    println!(
        "  files: {} ({} bytes of user data), ISO {} bytes ({} sectors), gzipped {} bytes, base64 {} bytes",
        drive.files().len(),
        user_data,
        drive.iso().len(),
        drive.iso().len() / 2048,
        drive.gzipped_size(),
        drive.base64_len()
    );

    match reference(&drive) {
        Ok(r) => {
            println!("same file tree, side by side:");
            println!(
                "  {:<34} {:>10} {:>9} {:>12}",
                "", "ISO bytes", "sectors", "gzipped"
            );
            println!(
                "  {:<34} {:>10} {:>9} {:>12}",
                "this crate (flate2 best)",
                drive.iso().len(),
                drive.iso().len() / 2048,
                drive.gzipped_size()
            );
            println!(
                "  {:<34} {:>10} {:>9} {:>12}",
                "this crate's ISO, `gzip -9`",
                drive.iso().len(),
                drive.iso().len() / 2048,
                r.ours_gzip9
            );
            println!(
                "  {:<34} {:>10} {:>9} {:>12}",
                "genisoimage, `gzip -9` (reference)",
                r.iso_len,
                r.iso_len / 2048,
                r.gzip9
            );
            println!(
                "  {:<34} {:>10} {:>9} {:>12}",
                "genisoimage, flate2 best",
                r.iso_len,
                r.iso_len / 2048,
                r.flate2
            );
            let ratio = drive.gzipped_size() as f64 / r.gzip9 as f64;
            println!("  gzipped size vs reference: {:.2}x", ratio);
        }
        Err(e) => {
            eprintln!("reference build failed: {e}");
            std::process::exit(1);
        }
    }
}

struct Reference {
    iso_len: usize,
    gzip9: usize,
    flate2: usize,
    ours_gzip9: usize,
}

/// The same tree through OpenStack's genisoimage command line.
fn reference(drive: &ConfigDrive) -> Result<Reference, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tree = dir.path().join("tree");
    for (path, content) in drive.files() {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&tree)).map_err(|e| e.to_string())?;
        std::fs::write(&p, content).map_err(|e| e.to_string())?;
    }
    let out = dir.path().join("ref.iso");
    let status = Command::new("genisoimage")
        .arg("-o")
        .arg(&out)
        .args([
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-publisher",
            "ironicclient-configdrive 0.1",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
        ])
        .arg(&tree)
        .output()
        .map_err(|e| format!("cannot run genisoimage (apt-get install genisoimage): {e}"))?;
    // genisoimage always warns that `-l -allow-lowercase` breaks strict ISO 9660; only show
    // its stderr when it fails.
    if !status.status.success() {
        return Err(format!(
            "genisoimage failed: {}: {}",
            status.status,
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let iso = std::fs::read(&out).map_err(|e| e.to_string())?;
    let flate2 = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&iso).map_err(|e| e.to_string())?;
        enc.finish().map_err(|e| e.to_string())?.len()
    };
    Ok(Reference {
        iso_len: iso.len(),
        gzip9: gzip9(&iso)?,
        flate2,
        ours_gzip9: gzip9(drive.iso())?,
    })
}

fn gzip9(data: &[u8]) -> Result<usize, String> {
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    feeder
        .join()
        .map_err(|_| "feeder panicked".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(out.stdout.len())
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
