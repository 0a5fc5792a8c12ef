//! Drives the scoped export through a pseudo-terminal against a throwaway
//! PostgreSQL cluster: you approve, the export reads its table as a role
//! minted for it, PostgreSQL refuses that role the other table, and the
//! role is dropped after.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

#[path = "../../approval-postgres/tests/cluster/mod.rs"]
mod cluster;

mod support;

use support::example;

#[test]
fn the_export_reads_its_table_as_a_minted_role_refused_elsewhere_and_dropped() {
    let cluster = cluster::Cluster::start_with_passwords();
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "{} {}",
        example("scoped_export").to_str().unwrap(),
        cluster.url()
    );
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script from util-linux");
    let mut stdin = child.stdin.take().unwrap();
    // Approve, no comment.
    stdin.write_all(b"y\n\n").unwrap();
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success(), "{output}");

    assert!(
        output.contains("Resource:  warehouse/customers"),
        "{output}"
    );
    let ran = output
        .lines()
        .find_map(|l| l.split_once("export_table ran as ").map(|(_, ran)| ran))
        .unwrap_or_else(|| panic!("{output}"));
    let (role, rows) = ran
        .split_once(", reading ")
        .unwrap_or_else(|| panic!("{output}"));
    assert!(role.starts_with("approval_"), "{output}");
    assert_eq!(rows.trim(), "1 row(s).");
    assert!(
        output.contains("The same role on payroll: permission denied for table payroll."),
        "{output}"
    );
    assert!(
        output.contains(&format!("Role {role} after the export: dropped.")),
        "{output}"
    );
    let log =
        std::fs::read_to_string(dir.path().join("approval-scoped-export/audit.jsonl")).unwrap();
    let events: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        events,
        [
            "requested",
            "reviewed",
            "approved",
            "credential_minted",
            "credential_revoked",
            "executed"
        ]
    );
}
