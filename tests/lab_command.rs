//! README's first command runs the lab: a full BOSH lifecycle through the real binary against
//! the real Ironic and companion server. This runs it as a user would and reads its output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use std::process::Command;

#[test]
fn the_lab_drives_a_full_lifecycle_and_stops_what_it_started() {
    let out = Command::new(ironic_cpi_testkit::binaries::lab().unwrap())
        .arg("run")
        .output()
        .expect("run ironic_cpi_lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab failed:\n{stdout}\n{stderr}");
    for method in [
        "info",
        "create_stemcell",
        "create_vm",
        "set_vm_metadata",
        "create_disk",
        "attach_disk",
        "get_disks",
        "reboot_vm",
        "detach_disk",
        "delete_disk",
        "delete_vm",
        "delete_stemcell",
    ] {
        assert!(
            stdout.contains(&format!("-> {method} ")),
            "{method} not called:\n{stdout}"
        );
    }
    assert!(!stdout.contains("<- ERROR"), "{stdout}");
    assert_eq!(stdout.matches("-> create_vm ").count(), 3);
    // The table at the peak shows three VMs with their BOSH names, the final one none.
    for name in [
        "router-0",
        "database-0",
        "worker-0",
        "cf/database/0",
        "1 (1 attached)",
    ] {
        assert!(stdout.contains(name), "{name} missing:\n{stdout}");
    }
    let final_table = stdout.rsplit("== the pool after").next().unwrap();
    assert!(
        !final_table.contains("agent "),
        "a node is still held:\n{final_table}"
    );
    assert!(final_table.contains("manageable") && final_table.contains("available"));
    print!("{stdout}");
}
