//! Benchmark: what one `create_vm` costs as the pool grows, and what the director's 32 parallel
//! `create_vm` cost Ironic, through a given `ironic_cpi` binary run as the director runs it,
//! against the real Ironic (fake-hardware, SQLite). Prints figures and a markdown table;
//! asserts nothing about time. Run it through `scripts/bench/pool-scale`.
//!
//! Per pool size (ascending; the pool grows from one size to the next in the same Ironic):
//! `min(--free, size)` free `available` nodes of resource class `bench-free`, the rest
//! `active` with a VM of this CPI (instance_uuid and VM record), two ports each. The first node
//! of each kind is made the real way (enrolled through the API; the deployed one deployed by
//! `create_vm`), the rest are its clones written into Ironic's database by
//! `scripts/bench/pool_fill.py`; the API's node and port lists are then counted. Then `--runs`
//! times: `create_vm` by resource class `bench-free` (wall time, HTTP requests from the
//! response's log, the CPI's peak RSS through /usr/bin/time, the CPU seconds of Ironic's
//! process group during the call), `delete_vm` between runs.
//!
//! At `--concurrent-at` nodes: `--concurrent` more free nodes (class `bench-burst`), as many
//! `create_vm` at once (wall time until the last answered, Ironic CPU seconds), then as many
//! `delete_vm` at once, and the extra nodes are deleted again.
//!
//! Ironic runs without its periodic tasks that walk every node (power-state sync, take-over
//! check): at 50,000 nodes they would dominate its CPU time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly
#![allow(unsafe_code)] // sysconf for the clock tick and page size of /proc figures

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

use ironic_cpi::ironic::{IronicClient, NodeQuery, PortQuery};
use ironic_cpi_testkit::cpi::{
    create_vm_args, make_stemcell_image, CallOutcome, CpiLab, CpiLabOptions,
};
use ironic_cpi_testkit::figures::median;
use ironic_cpi_testkit::ironic::{enroll_node, lab_mac, IronicLabOptions, NodeSpec};

#[derive(Parser, Debug)]
#[command(about = "create_vm cost against pools of growing size (see the file's doc comment)")]
struct Args {
    /// The `ironic_cpi` binary to measure.
    #[arg(long, default_value = "target/release/ironic_cpi")]
    cpi: PathBuf,
    /// The companion server binary (default: next to this example, `target/release/`).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Pool sizes in nodes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "5,1000,10000,50000")]
    sizes: Vec<usize>,
    /// create_vm + delete_vm cycles per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Free nodes in each pool (all others are deployed).
    #[arg(long, default_value_t = 10)]
    free: usize,
    /// How many create_vm run at once in the concurrent phase.
    #[arg(long, default_value_t = 32)]
    concurrent: usize,
    /// The pool size after which the concurrent phase runs (0: none).
    #[arg(long, default_value_t = 10000)]
    concurrent_at: usize,
    /// The command line to print under the table (the script passes its own).
    #[arg(long)]
    command: Option<String>,
}

const FREE_RC: &str = "bench-free";
const DEPLOYED_RC: &str = "bench-deployed";
const BURST_RC: &str = "bench-burst";

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("bench_pool_scale: {e}");
        std::process::exit(1);
    }
}

/// One measured CPI call.
struct Call {
    outcome: CallOutcome,
    elapsed: Duration,
    rss_kib: u64,
    ironic_cpu: f64,
}

impl Call {
    fn error(&self) -> Option<String> {
        if self.outcome.response["error"].is_null() {
            None
        } else {
            Some(format!(
                "{}: {}",
                self.outcome.error_type().unwrap_or("?"),
                self.outcome.response["error"]["message"]
                    .as_str()
                    .unwrap_or("")
            ))
        }
    }

    fn vm_cid(&self) -> Result<String, String> {
        match self.error() {
            Some(e) => Err(format!("create_vm failed: {e}")),
            None => Ok(self.outcome.result()[0]
                .as_str()
                .unwrap_or_default()
                .to_string()),
        }
    }

    /// "N HTTP requests to Ironic" from the response's log.
    fn requests(&self) -> Option<u64> {
        let log = self.outcome.response["log"].as_str()?;
        let head = &log[..log.find(" HTTP requests to Ironic")?];
        head.rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

/// Figures of one pool size.
struct SizeRow {
    nodes: usize,
    free: usize,
    ports: usize,
    fill: Duration,
    check: Duration,
    create: Vec<Duration>,
    requests: Vec<u64>,
    rss_kib: Vec<u64>,
    cpu: Vec<f64>,
}

struct BurstRow {
    nodes: usize,
    calls: usize,
    ok: usize,
    wall: Duration,
    cpu: f64,
    requests: Vec<u64>,
    rss_kib: u64,
    delete_wall: Duration,
}

struct Bench {
    lab: CpiLab,
    client: IronicClient,
    stemcell: String,
    rss_dir: PathBuf,
    config_path: PathBuf,
    filler: PathBuf,
    free_template: Option<String>,
    deployed_template: Option<String>,
    free: usize,
    deployed: usize,
    ports: usize,
}

fn run(args: Args) -> Result<(), String> {
    let cpi = args
        .cpi
        .canonicalize()
        .map_err(|e| format!("--cpi {}: {e}", args.cpi.display()))?;
    let release = std::env::current_exe()
        .map_err(|e| format!("no current exe: {e}"))?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or("cannot find target/release")?;
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| release.join("ironic_cpi_server"));
    let filler = ironic_cpi_testkit::process::repo_root().join("scripts/bench/pool_fill.py");
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.first() == Some(&0) {
        return Err("a pool size must be at least 1".into());
    }

    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Each CPI process runs under /usr/bin/time, which writes its peak RSS to rss.<pid> (exec
    // keeps the shell's pid, the one the lab reports).
    let rss_dir = work.path().join("rss");
    std::fs::create_dir(&rss_dir).map_err(|e| e.to_string())?;
    let wrapper = work.path().join("ironic_cpi");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/time -o '{}'/rss.$$ -f %M '{}' \"$@\"\n",
            rss_dir.display(),
            cpi.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;

    println!("== CPI under test: {}", cpi.display());
    println!(
        "== sizes {sizes:?}, {} free nodes per pool, {} create_vm per size, {} concurrent at {}",
        args.free, args.runs, args.concurrent, args.concurrent_at
    );
    let started = Instant::now();
    let lab = CpiLab::start(CpiLabOptions {
        ironic: IronicLabOptions {
            periodic_node_scans: false,
            ..Default::default()
        },
        registry: false,
        publish_configdrive: false,
        cpi_binary: wrapper,
        server_binary: Some(server),
    })?;
    println!(
        "== Ironic at {} (pid {}), periodic node scans off: [conductor] sync_power_state_interval = 0, sync_local_state_interval = 0",
        lab.ironic.url,
        lab.ironic.pid()
    );
    let conf = std::fs::read_to_string(lab.ironic.dir.join("ironic.conf")).unwrap_or_default();
    if !conf.contains("sync_power_state_interval = 0") {
        return Err("the lab's ironic.conf does not turn the power-state sync off".into());
    }
    // The lab's CPI config waits at most 60 s for a deploy (fake transitions take 0.2 s). Here
    // 32 calls at once keep a pre-issue-12 Ironic busy for minutes, and a deploy cut short by
    // the lab's deadline would change the work measured: the CPI's own defaults (an hour) apply.
    let config_path = work.path().join("cpi.json");
    let mut config: Value = std::fs::read(&lab.config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("cannot read the lab's CPI config")?;
    if let Some(ironic) = config["ironic"].as_object_mut() {
        ironic.remove("timeouts");
    }
    std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
    println!("== CPI config: the lab's, with the CPI's default wait timeouts (deploy 1 h)");
    let image = make_stemcell_image(work.path(), 1024 * 1024, true).map_err(|e| e.to_string())?;
    let out = lab.call(
        "create_stemcell",
        json!([image.to_str().unwrap_or_default(), {"name": "s", "version": "1", "disk_format": "qcow2"}]),
        2,
        None,
    );
    if !out.response["error"].is_null() {
        return Err(format!("create_stemcell failed: {}", out.stdout));
    }
    let stemcell = out.result().as_str().unwrap_or_default().to_string();
    let client = lab.client().map_err(|e| e.to_string())?;
    let mut bench = Bench {
        lab,
        client,
        stemcell,
        rss_dir,
        config_path,
        filler,
        free_template: None,
        deployed_template: None,
        free: 0,
        deployed: 0,
        ports: 0,
    };

    let mut rows = Vec::new();
    let mut burst = None;
    for &size in &sizes {
        let row = bench.measure_size(size, args.free, args.runs)?;
        rows.push(row);
        if args.concurrent_at > 0 && size == args.concurrent_at && args.concurrent > 0 {
            burst = Some(bench.burst(args.concurrent)?);
        }
    }
    if args.concurrent_at > 0 && !sizes.contains(&args.concurrent_at) && args.concurrent > 0 {
        println!(
            "== no concurrent phase: {} is not among the sizes",
            args.concurrent_at
        );
    }

    println!();
    println!("## create_vm against growing pools");
    println!();
    println!("CPI: `{}`", cpi.display());
    println!();
    println!("| pool nodes (free) | ports | fill + check | create_vm, median (min-max) | HTTP requests | CPI peak RSS | Ironic CPU per create_vm, median (min-max) |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} ({}) | {} | {:.1} s + {:.1} s | {:.2} s ({:.2}-{:.2}) | {} | {} | {:.2} s ({:.2}-{:.2}) |",
            thousands(r.nodes),
            r.free,
            thousands(r.ports),
            r.fill.as_secs_f64(),
            r.check.as_secs_f64(),
            secs(median(&r.create)),
            secs(r.create.iter().min().copied().unwrap_or_default()),
            secs(r.create.iter().max().copied().unwrap_or_default()),
            spread(&r.requests),
            mib(r.rss_kib.iter().max().copied().unwrap_or(0)),
            median_f(&r.cpu),
            r.cpu.iter().copied().fold(f64::INFINITY, f64::min),
            r.cpu.iter().copied().fold(0.0, f64::max),
        );
    }
    if let Some(b) = &burst {
        println!();
        println!("| {} concurrent create_vm at {} nodes | wall time until the last answered | Ironic CPU | succeeded | HTTP requests per call | CPI peak RSS (max) | then {} concurrent delete_vm |",
            b.calls, thousands(b.nodes), b.calls);
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| | {:.1} s | {:.1} s | {}/{} | {} | {} | {:.1} s |",
            secs(b.wall),
            b.cpu,
            b.ok,
            b.calls,
            spread(&b.requests),
            mib(b.rss_kib),
            secs(b.delete_wall),
        );
    }
    println!();
    println!(
        "Ironic CPU: user + system seconds of Ironic's process group (API and conductor in one \
         all-in-one process and its worker, reaped children included) from /proc, between the \
         CPI process's start and exit. Periodic node scans off. Total run {:.1} min.",
        started.elapsed().as_secs_f64() / 60.0
    );
    let command = args.command.clone().unwrap_or_else(|| {
        std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    });
    println!();
    println!("Command: `{command}`");
    Ok(())
}

impl Bench {
    /// Grow the pool to `size` nodes, check it through the API, then measure create_vm.
    fn measure_size(&mut self, size: usize, free: usize, runs: usize) -> Result<SizeRow, String> {
        let want_free = free.min(size).max(1);
        let want_deployed = size.saturating_sub(want_free);
        println!(
            "\n== pool of {} nodes: {want_free} free ({FREE_RC}), {want_deployed} deployed",
            thousands(size)
        );
        let fill_started = Instant::now();
        if self.free < want_free {
            let template = self.free_template()?;
            let added = self.clone_nodes(
                &template,
                want_free - self.free,
                "bench-free-",
                self.free,
                None,
            )?;
            self.free += added;
        }
        if self.deployed < want_deployed {
            let template = self.deployed_template()?;
            let added = self.clone_nodes(
                &template,
                want_deployed - self.deployed,
                "bench-deployed-",
                self.deployed,
                None,
            )?;
            self.deployed += added;
        }
        let fill = fill_started.elapsed();
        let check_started = Instant::now();
        self.check_pool(0, &[(FREE_RC, self.free)])?;
        let check = check_started.elapsed();
        println!(
            "fill {:.1} s, check through the API {:.1} s: {} nodes, {} ports",
            secs(fill),
            secs(check),
            thousands(self.free + self.deployed),
            thousands(self.ports)
        );
        let idle_before = self.ironic_cpu()?;
        std::thread::sleep(Duration::from_secs(3));
        println!(
            "Ironic idle: {:.2} CPU s over 3 s; RSS {}",
            self.ironic_cpu()? - idle_before,
            mib(self.ironic_rss_kib())
        );

        let mut row = SizeRow {
            nodes: self.free + self.deployed,
            free: self.free,
            ports: self.ports,
            fill,
            check,
            create: vec![],
            requests: vec![],
            rss_kib: vec![],
            cpu: vec![],
        };
        for run in 1..=runs.max(1) {
            let call = self.create_vm(FREE_RC)?;
            let vm = call.vm_cid()?;
            let requests = call.requests();
            println!(
                "create_vm {run}: {:.2} s, {} HTTP requests, CPI peak RSS {}, Ironic CPU {:.2} s",
                secs(call.elapsed),
                requests.map_or("?".to_string(), |n| n.to_string()),
                mib(call.rss_kib),
                call.ironic_cpu
            );
            row.create.push(call.elapsed);
            row.requests.extend(requests);
            row.rss_kib.push(call.rss_kib);
            row.cpu.push(call.ironic_cpu);
            let del = self.call("delete_vm", json!([vm]))?;
            if let Some(e) = del.error() {
                return Err(format!("delete_vm {vm} failed: {e}"));
            }
        }
        println!("Ironic RSS after the calls: {}", mib(self.ironic_rss_kib()));
        Ok(row)
    }

    /// `calls` more free nodes, as many create_vm at once, then as many delete_vm at once; the
    /// extra nodes are deleted afterwards so that the next size starts from its own pool.
    fn burst(&mut self, calls: usize) -> Result<BurstRow, String> {
        let template = self.free_template()?;
        let ports_before = self.ports;
        let added = self.clone_nodes(&template, calls, "bench-burst-", 0, Some(BURST_RC))?;
        self.check_pool(added, &[(FREE_RC, self.free), (BURST_RC, added)])?;
        let nodes = self.free + self.deployed + added;
        println!(
            "\n== {calls} concurrent create_vm ({BURST_RC}) at {} nodes",
            thousands(nodes)
        );
        let cpu_before = self.ironic_cpu()?;
        let started = Instant::now();
        let results = self.parallel(calls, |_| {
            (
                "create_vm".to_string(),
                create_vm_args(&self.stemcell, BURST_RC),
            )
        });
        let wall = started.elapsed();
        let cpu = self.ironic_cpu()? - cpu_before;
        let mut vms = Vec::new();
        let mut requests = Vec::new();
        let mut rss = 0;
        let mut errors: HashMap<String, usize> = HashMap::new();
        for call in &results {
            rss = rss.max(call.rss_kib);
            requests.extend(call.requests());
            match call.vm_cid() {
                Ok(vm) => vms.push(vm),
                Err(e) => *errors.entry(e).or_default() += 1,
            }
        }
        println!(
            "{} of {calls} succeeded in {:.1} s; Ironic CPU {cpu:.1} s; HTTP requests per call {}; CPI peak RSS max {}",
            vms.len(),
            secs(wall),
            spread(&requests),
            mib(rss)
        );
        for (e, n) in &errors {
            println!("  {n} failed: {e}");
        }
        let started = Instant::now();
        let deletes = self.parallel(vms.len(), |i| ("delete_vm".to_string(), json!([vms[i]])));
        let delete_wall = started.elapsed();
        let failed: Vec<String> = deletes.iter().filter_map(Call::error).collect();
        println!(
            "{} concurrent delete_vm: {:.1} s, {} failed{}",
            vms.len(),
            secs(delete_wall),
            failed.len(),
            failed
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let burst_nodes = self
            .client
            .list_nodes(&NodeQuery {
                resource_class: Some(BURST_RC.into()),
                fields: vec!["uuid".into()],
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        for node in &burst_nodes {
            self.client
                .delete_node(&node.uuid)
                .map_err(|e| format!("deleting {}: {e}", node.uuid))?;
        }
        self.ports = ports_before;
        println!("deleted the {} {BURST_RC} nodes", burst_nodes.len());
        Ok(BurstRow {
            nodes,
            calls,
            ok: vms.len(),
            wall,
            cpu,
            requests,
            rss_kib: rss,
            delete_wall,
        })
    }

    /// The first free node, enrolled through the API: the template of every other free node.
    fn free_template(&mut self) -> Result<String, String> {
        if let Some(t) = &self.free_template {
            return Ok(t.clone());
        }
        let node = self.enroll_template("bench-free-00000", FREE_RC, 0x62)?;
        self.free += 1;
        self.free_template = Some(node.clone());
        Ok(node)
    }

    /// The first deployed node, enrolled through the API and deployed by the CPI's create_vm:
    /// the template of every other deployed node (with its VM record).
    fn deployed_template(&mut self) -> Result<String, String> {
        if let Some(t) = &self.deployed_template {
            return Ok(t.clone());
        }
        let node = self.enroll_template("bench-deployed-00000", DEPLOYED_RC, 0x63)?;
        self.create_vm(DEPLOYED_RC)?.vm_cid()?;
        let node = self.client.get_node(&node).map_err(|e| e.to_string())?;
        if node.provision_state.as_deref() != Some("active") || node.instance_uuid.is_none() {
            return Err(format!(
                "the deployed template {} is {:?} with instance_uuid {:?}",
                node.uuid, node.provision_state, node.instance_uuid
            ));
        }
        self.deployed += 1;
        self.deployed_template = Some(node.uuid.clone());
        Ok(node.uuid)
    }

    /// A template node named `name`, of class `rc`, with two ports (MACs from `mac_byte`),
    /// enrolled through the API; its uuid.
    fn enroll_template(&mut self, name: &str, rc: &str, mac_byte: u8) -> Result<String, String> {
        let mut spec = NodeSpec::new(name);
        spec.resource_class = Some(rc.into());
        spec.macs = vec![lab_mac(mac_byte, 0, 0), lab_mac(mac_byte, 0, 1)];
        let node = enroll_node(&self.client, &spec).map_err(|e| e.to_string())?;
        self.ports += 2;
        Ok(node.uuid)
    }

    /// Clone `template` `count` times into Ironic's database; returns how many were added.
    fn clone_nodes(
        &mut self,
        template: &str,
        count: usize,
        prefix: &str,
        first: usize,
        resource_class: Option<&str>,
    ) -> Result<usize, String> {
        if count == 0 {
            return Ok(0);
        }
        let mut cmd = Command::new(self.lab.ironic.venv().join("bin/python"));
        cmd.arg(&self.filler)
            .arg(self.lab.ironic.dir.join("ironic.sqlite"))
            .arg(template)
            .arg(count.to_string())
            .arg(prefix)
            .arg(first.to_string());
        if let Some(rc) = resource_class {
            cmd.arg(rc);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.filler.display()))?;
        if !out.status.success() {
            return Err(format!(
                "pool_fill.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("pool_fill.py printed no JSON ({e})"))?;
        println!("pool_fill: {report}");
        self.ports += report["ports"].as_u64().unwrap_or(0) as usize;
        Ok(report["nodes"].as_u64().unwrap_or(0) as usize)
    }

    /// The API's view agrees with what was written: every node and port listed, two ports per
    /// node, the expected free nodes `available` per resource class, the rest `active`.
    fn check_pool(&self, extra_nodes: usize, free: &[(&str, usize)]) -> Result<(), String> {
        let nodes = self
            .client
            .list_nodes(&NodeQuery {
                fields: vec![
                    "uuid".into(),
                    "provision_state".into(),
                    "resource_class".into(),
                    "instance_uuid".into(),
                ],
                ..Default::default()
            })
            .map_err(|e| format!("listing nodes: {e}"))?;
        let ports = self
            .client
            .list_ports(&PortQuery {
                fields: vec!["uuid".into(), "node_uuid".into()],
                ..Default::default()
            })
            .map_err(|e| format!("listing ports: {e}"))?;
        let expected_nodes = self.free + self.deployed + extra_nodes;
        let expected_ports = self.ports;
        if nodes.len() != expected_nodes || ports.len() != expected_ports {
            return Err(format!(
                "Ironic lists {} nodes and {} ports, expected {expected_nodes} and {expected_ports}",
                nodes.len(),
                ports.len()
            ));
        }
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for p in &ports {
            *per_node.entry(p.node_uuid.as_str()).or_default() += 1;
        }
        if let Some(n) = nodes
            .iter()
            .find(|n| per_node.get(n.uuid.as_str()) != Some(&2))
        {
            return Err(format!("node {} does not have 2 ports", n.uuid));
        }
        for (rc, count) in free {
            let n = nodes
                .iter()
                .filter(|n| {
                    n.resource_class.as_deref() == Some(rc)
                        && n.provision_state.as_deref() == Some("available")
                        && n.instance_uuid.is_none()
                })
                .count();
            if n != *count {
                return Err(format!(
                    "{n} available nodes of class {rc}, expected {count}"
                ));
            }
        }
        let active = nodes
            .iter()
            .filter(|n| n.provision_state.as_deref() == Some("active") && n.instance_uuid.is_some())
            .count();
        if active != self.deployed {
            return Err(format!(
                "{active} active nodes with an instance, expected {}",
                self.deployed
            ));
        }
        Ok(())
    }

    fn create_vm(&self, resource_class: &str) -> Result<Call, String> {
        self.call("create_vm", create_vm_args(&self.stemcell, resource_class))
    }

    /// One CPI call with its figures.
    fn call(&self, method: &str, arguments: Value) -> Result<Call, String> {
        let cpu_before = self.ironic_cpu()?;
        let call = self.spawn(method, arguments);
        let (outcome, rss_kib) = self.finish(call);
        let ironic_cpu = self.ironic_cpu()? - cpu_before;
        Ok(Call {
            elapsed: outcome.elapsed,
            outcome,
            rss_kib,
            ironic_cpu,
        })
    }

    fn spawn(&self, method: &str, arguments: Value) -> ironic_cpi_testkit::cpi::RunningCall {
        let stemcell_api = (method == "create_vm").then_some(3);
        self.lab
            .spawn_call(&self.config_path, method, arguments, 2, stemcell_api)
    }

    fn finish(&self, call: ironic_cpi_testkit::cpi::RunningCall) -> (CallOutcome, u64) {
        let pid = call.pid();
        let outcome = call.wait();
        let rss = std::fs::read_to_string(self.rss_dir.join(format!("rss.{pid}")))
            .ok()
            .and_then(|s| s.lines().filter_map(|l| l.trim().parse().ok()).next_back())
            .unwrap_or(0);
        (outcome, rss)
    }

    /// `n` calls started at once, each waited for on its own thread (so that each one's time
    /// ends when it answered).
    fn parallel(&self, n: usize, request: impl Fn(usize) -> (String, Value)) -> Vec<Call> {
        let mut running = Vec::new();
        for i in 0..n {
            let (method, args) = request(i);
            running.push(self.spawn(&method, args));
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = running
                .into_iter()
                .map(|call| s.spawn(move || self.finish(call)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    let (outcome, rss_kib) = h.join().expect("waiting thread");
                    Call {
                        elapsed: outcome.elapsed,
                        outcome,
                        rss_kib,
                        ironic_cpu: 0.0,
                    }
                })
                .collect()
        })
    }

    /// User + system CPU seconds of Ironic's process group (the all-in-one process leads it and
    /// forks its worker), including children already reaped.
    fn ironic_cpu(&self) -> Result<f64, String> {
        let group = self.lab.ironic.pid();
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut ticks = 0u64;
        for (pgrp, stat) in process_stats()? {
            if pgrp == group {
                // utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat.
                ticks += stat[11..15].iter().sum::<u64>();
            }
        }
        Ok(ticks as f64 / ticks_per_s)
    }

    /// Resident memory of Ironic's process group now.
    fn ironic_rss_kib(&self) -> u64 {
        let group = self.lab.ironic.pid();
        // SAFETY: as in ironic_cpu.
        let page_kib = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
        process_stats()
            .unwrap_or_default()
            .into_iter()
            .filter(|(pgrp, _)| *pgrp == group)
            .map(|(_, stat)| stat[21] * page_kib)
            .sum()
    }
}

/// (process group, fields after the command name) of every process, from /proc/PID/stat: field N
/// of proc(5) is at index N - 3 (`state`, the one that is not a number, reads as 0).
fn process_stats() -> Result<Vec<(u32, Vec<u64>)>, String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))? {
        let Ok(entry) = entry else { continue };
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: the fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if fields.len() > 21 {
            out.push((fields[2] as u32, fields));
        }
    }
    Ok(out)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median_f(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// "12" when all equal, else "min-max".
fn spread(v: &[u64]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => "?".into(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./,=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
