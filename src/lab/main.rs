//! `ironic_cpi_lab`: a local lab with the real Ironic (fake hardware) and the companion server.
//!
//! `run` drives a complete BOSH lifecycle through the `ironic_cpi` binary exactly as the director
//! would (one process per call, JSON on stdin), prints every call, its result and time, and the
//! pool table; then stops everything it started. `up` keeps the lab running for manual calls.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use ironic_cpi::pool::view;
use ironic_cpi_testkit::certs;
use ironic_cpi_testkit::cpi::{make_stemcell_image, CallOutcome, CpiLab, CpiLabOptions};
use ironic_cpi_testkit::ironic::{enroll_node, EnrollTarget, IronicLabOptions, NodeSpec};

#[derive(Parser)]
#[command(
    name = "ironic_cpi_lab",
    version,
    about = "A local Ironic + companion server lab for the Ironic CPI"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand)]
enum Mode {
    /// Drive a full BOSH lifecycle through the CPI, print each call and the pool, then stop.
    Run,
    /// Start the lab, enroll the pool, upload a stemcell, and keep it up for manual calls until
    /// Ctrl-C.
    Up,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    ironic_cpi_common::logging::init("ironic_cpi_lab");
    let cli = Cli::parse();
    let result = match cli.mode.unwrap_or(Mode::Run) {
        Mode::Run => run(),
        Mode::Up => up(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironic_cpi_lab: {e}");
            ExitCode::from(1)
        }
    }
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --bins`",
            path.display()
        ))
    }
}

struct Lab {
    cpi: CpiLab,
    stemcell: String,
    _image_dir: tempfile::TempDir,
}

/// The pool: small, medium and large machines, some `available`, some `manageable` (as an
/// operator enrolls them before handing them to BOSH).
fn pool_specs() -> Vec<NodeSpec> {
    let node = |name: &str,
                cpus: u32,
                mem_gb: u64,
                disk_gb: u64,
                rc: &str,
                traits: &[&str],
                target,
                macs: &[&str]| {
        let mut s = NodeSpec::new(name);
        s.cpus = cpus;
        s.memory_mb = mem_gb * 1024;
        s.local_gb = disk_gb;
        s.resource_class = Some(rc.into());
        s.traits = traits.iter().map(|t| t.to_string()).collect();
        s.target = target;
        s.macs = macs.iter().map(|m| m.to_string()).collect();
        s
    };
    vec![
        node(
            "lab-small-0",
            4,
            8,
            100,
            "baremetal",
            &[],
            EnrollTarget::Available,
            &["52:54:00:1a:00:01", "52:54:00:1a:00:02"],
        ),
        node(
            "lab-small-1",
            4,
            8,
            100,
            "baremetal",
            &[],
            EnrollTarget::Manageable,
            &["52:54:00:1a:01:01", "52:54:00:1a:01:02"],
        ),
        node(
            "lab-medium-0",
            16,
            64,
            400,
            "baremetal",
            &["CUSTOM_RAID1"],
            EnrollTarget::Available,
            &["52:54:00:1a:02:01"],
        ),
        node(
            "lab-large-0",
            64,
            512,
            2000,
            "baremetal-large",
            &["CUSTOM_RAID1", "CUSTOM_GPU"],
            EnrollTarget::Manageable,
            &["52:54:00:1a:03:01"],
        ),
        node(
            "lab-spare-0",
            8,
            16,
            200,
            "baremetal",
            &[],
            EnrollTarget::Available,
            &["52:54:00:1a:04:01"],
        ),
    ]
}

fn start() -> Result<Lab, String> {
    let started = Instant::now();
    println!("== starting the lab: real Ironic (fake hardware) and the companion server");
    let cpi = CpiLab::start(CpiLabOptions {
        ironic: IronicLabOptions::default(),
        registry: true,
        publish_configdrive: false,
        cpi_binary: sibling("ironic_cpi")?,
        server_binary: Some(sibling("ironic_cpi_server")?),
    })?;
    println!(
        "   Ironic     {} (started in {:.1} s)",
        cpi.ironic.url,
        cpi.ironic.started_in.as_secs_f64()
    );
    println!("   server     {}", cpi.server.url);
    println!("   CPI config {}", cpi.config_path.display());
    let client = cpi.client().map_err(|e| e.to_string())?;
    for spec in pool_specs() {
        let node =
            enroll_node(&client, &spec).map_err(|e| format!("enrolling {}: {e}", spec.name))?;
        println!(
            "   enrolled   {} {} ({})",
            node.uuid,
            spec.name,
            node.state()
        );
    }
    let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image =
        make_stemcell_image(image_dir.path(), 8 * 1024 * 1024, true).map_err(|e| e.to_string())?;
    println!("== lab ready in {:.1} s", started.elapsed().as_secs_f64());
    let mut lab = Lab {
        cpi,
        stemcell: String::new(),
        _image_dir: image_dir,
    };
    let out = step(&lab, "info", json!([]))?;
    let formats = out.result()["stemcell_formats"].clone();
    let out = step(
        &lab,
        "create_stemcell",
        json!([image.to_string_lossy(), {"name": "bosh-openstack-kvm-ubuntu-jammy-go_agent-raw",
              "version": "1.406", "disk_format": "qcow2", "os_distro": "ubuntu",
              "stemcell_formats": formats}]),
    )?;
    lab.stemcell = out.result().as_str().unwrap_or_default().to_string();
    Ok(lab)
}

/// One CPI call through the binary, printed as the director log would show it.
fn step(lab: &Lab, method: &str, args: Value) -> Result<CallOutcome, String> {
    let shown = abbreviate(&args.to_string(), 150);
    println!("-> {method} {shown}");
    let out = lab.cpi.call(method, args, 2, Some(3));
    let secs = out.elapsed.as_secs_f64();
    if out.response["error"].is_null() {
        println!(
            "<- {} ({secs:.2} s)",
            abbreviate(&out.result().to_string(), 150)
        );
        Ok(out)
    } else {
        println!("<- ERROR {} ({secs:.2} s)", out.response["error"]);
        Err(format!("{method} failed; its stderr:\n{}", out.stderr))
    }
}

fn abbreviate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

fn table(lab: &Lab, title: &str) -> Result<(), String> {
    let client = lab.cpi.client().map_err(|e| e.to_string())?;
    println!("== {title}");
    view::print(
        &client,
        std::time::SystemTime::now(),
        ironic_cpi::pool::orphans::DEFAULT_STALE_AFTER,
        &mut std::io::stdout().lock(),
    )
}

fn network(ip: &str, mac: Option<&str>) -> Value {
    let mut net = json!({"type": "manual", "ip": ip, "netmask": "255.255.255.0", "gateway": "10.0.16.1",
        "dns": ["10.0.16.2"], "default": ["dns", "gateway"], "prefix": "24", "cloud_properties": {}});
    if let Some(mac) = mac {
        net["cloud_properties"]["macs"] = json!([mac]);
    }
    json!({"default": net})
}

/// What the director sends: its NATS CA with a certificate and key made for this agent.
fn env(agent_id: &str) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir for certificates: {e}"))?;
    let cert = certs::mbus_cert(dir.path(), agent_id, "10.0.16.11")?;
    Ok(json!({"bosh": {"mbus": {"cert": cert},
        "group": "lab-cf-router", "groups": ["lab", "cf", "router"]}}))
}

fn vm_cid(out: &CallOutcome) -> String {
    out.result()[0].as_str().unwrap_or_default().to_string()
}

fn run() -> Result<(), String> {
    let started = Instant::now();
    let lab = start()?;
    let s = lab.stemcell.clone();
    let agent = |n: u32| format!("lab-agent-{n}");

    let by_mac = step(
        &lab,
        "create_vm",
        json!([agent(1), s, {"macs": ["52:54:00:1a:01:01"]},
        network("10.0.16.11", Some("52:54:00:1a:01:01")), [], env(&agent(1))?]),
    )?;
    let by_specs = step(
        &lab,
        "create_vm",
        json!([agent(2), s, {"resource_class": "baremetal",
        "ironic_properties": {"cpus": 12, "memory_mb": 32768}}, network("10.0.16.12", None), [], env(&agent(2))?]),
    )?;
    let by_traits = step(
        &lab,
        "create_vm",
        json!([agent(3), s, {"resource_class": "baremetal-large",
        "traits": ["CUSTOM_GPU"]}, network("10.0.16.13", None), [], env(&agent(3))?]),
    )?;
    let vms = [vm_cid(&by_mac), vm_cid(&by_specs), vm_cid(&by_traits)];

    for (i, (vm, group)) in vms.iter().zip(["router", "database", "worker"]).enumerate() {
        step(
            &lab,
            "set_vm_metadata",
            json!([vm, {"director": "lab", "deployment": "cf",
            "instance_group": group, "index": "0", "id": format!("instance-{i}"),
            "name": format!("{group}/instance-{i}"), "created_at": "2026-11-21T00:00:00Z"}]),
        )?;
    }
    let db = &vms[1];
    let disk = step(
        &lab,
        "create_disk",
        json!([20480, {"device": "/dev/sdb"}, db]),
    )?;
    let disk = disk.result().as_str().unwrap_or_default().to_string();
    step(&lab, "attach_disk", json!([db, disk]))?;
    step(&lab, "get_disks", json!([db]))?;
    step(&lab, "reboot_vm", json!([vms[0]]))?;
    step(&lab, "has_vm", json!([vms[2]]))?;
    table(&lab, "the pool with three BOSH VMs")?;

    step(&lab, "detach_disk", json!([db, disk]))?;
    step(&lab, "delete_disk", json!([disk]))?;
    for vm in &vms {
        step(&lab, "delete_vm", json!([vm]))?;
    }
    step(&lab, "delete_stemcell", json!([s]))?;
    table(
        &lab,
        "the pool after the deployment is gone (back to available / manageable)",
    )?;
    println!(
        "== lifecycle done in {:.1} s; stopping the lab",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn up() -> Result<(), String> {
    let lab = start()?;
    let cpi = sibling("ironic_cpi")?;
    let cfg = lab.cpi.config_path.display().to_string();
    table(&lab, "the pool")?;
    println!(
        "\nThe lab is up. Try, in another terminal:\n\n  \
         {cpi} -c {cfg} pool\n  \
         echo '{{\"method\":\"info\",\"arguments\":[],\"context\":{{\"director_uuid\":\"d\"}}}}' | {cpi} -c {cfg}\n  \
         {cpi} -c {cfg} call create_vm my-agent {stemcell} '{{\"resource_class\":\"baremetal\"}}' \
         '{{\"default\":{{\"type\":\"dynamic\",\"cloud_properties\":{{}}}}}}' '[]' '{{}}'\n  \
         {cpi} -c {cfg} call delete_vm <node uuid from create_vm>\n\n\
         Press Ctrl-C to stop the lab.",
        cpi = cpi.display(),
        stemcell = lab.stemcell,
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\n== stopping the lab");
    Ok(())
}
