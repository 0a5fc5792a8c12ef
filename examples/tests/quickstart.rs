//! Drives the quickstart through a pseudo-terminal, as a person would:
//! approve the export, deny the key rotation with a comment.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

mod support;

use support::example;

#[test]
fn quickstart_approves_one_denies_one_and_verifies_its_log() {
    let dir = tempfile::tempdir().unwrap();
    // `script` (util-linux) runs the example on a new pseudo-terminal, which
    // becomes its /dev/tty.
    let mut child = Command::new("script")
        .args([
            "-qefc",
            example("quickstart").to_str().unwrap(),
            "/dev/null",
        ])
        .current_dir(dir.path())
        // A line per step on the terminal, as a newcomer would ask for.
        .env("RUST_LOG", "approval_core=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script from util-linux");
    let mut stdin = child.stdin.take().unwrap();
    // Approve (no comment), then deny with a comment.
    stdin
        .write_all(b"y\n\nn\nnot during the release freeze\n")
        .unwrap();
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{output}");

    assert!(output.contains("Made a fresh DEVELOPMENT key"), "{output}");
    assert!(
        output.contains("Action:    quickstart::export_table"),
        "{output}"
    );
    assert!(
        output.contains("Resource:  warehouse/customers"),
        "{output}"
    );
    assert!(
        output.contains("export_table ran: 5000 rows exported."),
        "{output}"
    );
    assert!(
        output.contains("rotate_key did not run: denied by terminal:"),
        "{output}"
    );
    assert!(
        output.contains(": not during the release freeze"),
        "{output}"
    );
    assert!(output.contains("records, head "), "{output}");
    for step in [
        "request recorded",
        "request delivered",
        "request settled",
        "body ran",
    ] {
        let lines = output.lines().filter(|l| l.contains(step)).count();
        assert!(lines >= 1, "no {step:?} line in {output}");
    }
    // Spans and events name the request, never the arguments' values.
    assert!(output.contains("request_id="), "{output}");
    // Compared by token: a timestamp or a request id may contain the digits.
    let leaks = |l: &str| {
        l.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|token| token == "5000" || token == "customers")
    };
    assert!(
        !output.lines().any(|l| l.contains(" INFO") && leaks(l)),
        "{output}"
    );

    let log = std::fs::read_to_string(dir.path().join("approval-quickstart/audit.jsonl")).unwrap();
    let events: Vec<String> = log
        .lines()
        .map(|l| {
            l.split("\"event\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events,
        [
            "requested",
            "reviewed",
            "approved",
            "executed",
            "requested",
            "reviewed",
            "denied"
        ]
    );
    assert!(log.contains("\"comment\":\"not during the release freeze\""));
    // The verification key written beside the log verifies it, and the
    // head matches the one the run printed.
    let verify_key = dir.path().join("approval-quickstart/dev.key.verify");
    let keyring = approval_core::Keyring::new().with(
        approval_core::KeyId::new("dev").unwrap(),
        approval_core::RecordKey::read_file(&verify_key).unwrap(),
    );
    let report = approval_core::verify(log.as_bytes(), &keyring).unwrap();
    assert_eq!(report.records, 7);
    assert!(
        output.contains(&format!(
            "7 records, head {}; the signed checkpoint covers all 7 records.",
            report.head_hex()
        )),
        "{output}"
    );
    // The printed command checks the chain and the checkpoint, trusting the
    // public key of the signing key written beside the log.
    let signing = approval_core::checkpoint::SigningKey::read_file(
        dir.path().join("approval-quickstart/dev.signing"),
    )
    .unwrap();
    assert!(
        output.contains(&format!(
            "verify approval-quickstart/audit.jsonl --key dev=approval-quickstart/dev.key.verify --checkpoint approval-quickstart/audit.jsonl.checkpoint --trust {}",
            signing.verifier()
        )),
        "{output}"
    );

    // The run's evidence pack checks with the commands it prints.
    let approval = example("quickstart")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("approval");
    assert!(
        approval.exists(),
        "{} not built (run the workspace's tests)",
        approval.display()
    );
    let packed = Command::new(&approval)
        .current_dir(dir.path())
        .args([
            "evidence",
            "approval-quickstart/audit.jsonl",
            "--out",
            "evidence.tar",
            "--key",
            "dev=approval-quickstart/dev.key.verify",
            "--checkpoint",
            "approval-quickstart/audit.jsonl.checkpoint",
            "--trust",
            &signing.verifier().to_string(),
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&packed.stdout);
    assert!(
        packed.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let command = printed
        .lines()
        .skip_while(|l| *l != "check it:")
        .nth(1)
        .unwrap_or_else(|| panic!("{printed}"))
        .trim();
    assert_eq!(command, "tar xf evidence.tar && cd evidence && sh CHECK.sh");
    let bin = approval.parent().unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "the auditor's PATH, with the binary first"
    )]
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let checked = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(said.contains("ok: 7 records"), "{said}");
    assert!(said.contains("checkpoint ok:"), "{said}");
    let population = std::fs::read_to_string(dir.path().join("evidence/population.csv")).unwrap();
    assert_eq!(population.lines().count(), 3, "{population}");
    assert!(
        population.contains("\"quickstart::rotate_key\""),
        "{population}"
    );
    // Its hint proves one sampled request to someone with the public key.
    let request = population
        .lines()
        .nth(1)
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap();
    let check = std::fs::read_to_string(dir.path().join("evidence/CHECK.sh")).unwrap();
    let hint: Vec<String> = check
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .map(|l| l.replace("REQUEST_ID", request))
        .collect();
    assert_eq!(hint.len(), 2, "{check}");
    let proved = Command::new("sh")
        .args(["-c", &hint.join(" && ")])
        .current_dir(dir.path().join("evidence"))
        .env("PATH", &path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&proved.stdout);
    assert!(
        proved.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&proved.stderr)
    );
    assert!(
        said.contains(&format!("records of request {request} are in")),
        "{said}"
    );
}

#[test]
fn the_custom_approver_example_approves_through_its_own_channel() {
    let output = Command::new(example("custom_approver")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("frank is now admin"), "{stdout}");
    assert!(stdout.contains("4 audit records"), "{stdout}");
    assert!(stdout.contains("erin's vote: Ok(Counted"), "{stdout}");
}

#[test]
fn the_inventory_example_lists_every_gated_function_with_its_policy() {
    let output = Command::new(example("inventory")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .filter(|line| line.contains("::"))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["inventory::crm::export", "data-export"],
            ["inventory::iam::grant", "grant-role"],
            ["inventory::iam::rotate_key", "key-rotation"],
        ],
        "{stdout}"
    );
    assert!(stdout.ends_with("3 gated functions\n"), "{stdout}");
}

/// `--web`: the same run, decided in the review console. The test signs in
/// and votes over HTTP as the console's page does (the page itself is
/// tested in Chromium in `approval-http`).
#[test]
fn quickstart_web_is_decided_in_the_review_console() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(example("quickstart"))
        .arg("--web")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (url, token) = loop {
        let line = lines.next().expect("the console's address").unwrap();
        if let Some(rest) = line.strip_prefix("Review console: ") {
            let (url, token) = rest.split_once("  (sign in with the token ").unwrap();
            break (url.to_owned(), token.trim_end_matches(')').to_owned());
        }
    };
    let base = url.trim_end_matches("console").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let page = client.get(&url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let signed_in = client
            .post(format!("{base}console/session"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({"token": token}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 200);
        let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
        assert!(
            !cookie.contains("Secure"),
            "plain HTTP on loopback: {cookie}"
        );
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let body: serde_json::Value =
            serde_json::from_str(&signed_in.text().await.unwrap()).unwrap();
        let csrf = body["csrf"].as_str().unwrap().to_owned();
        // Approve the export, then deny the key rotation with a comment.
        for (action, vote) in [
            (
                "quickstart::export_table",
                serde_json::json!({"vote": "approve"}),
            ),
            (
                "quickstart::rotate_key",
                serde_json::json!({"vote": "deny", "comment": "not during the release freeze"}),
            ),
        ] {
            let id = loop {
                let list = client
                    .get(format!("{base}requests"))
                    .header("Cookie", &cookie)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let list: serde_json::Value = serde_json::from_str(&list).unwrap();
                let first = &list["requests"][0];
                if first["gate"]["action"] == action {
                    break first["request_id"].as_str().unwrap().to_owned();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let voted = client
                .post(format!("{base}requests/{id}/votes"))
                .header("Cookie", &cookie)
                .header("X-CSRF-Token", &csrf)
                .body(vote.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(voted.status(), 200);
        }
    });
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let output = rest.join("\n");
    let mut errors = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{output}\n{errors}");
    assert!(
        output.contains("export_table ran: 5000 rows exported."),
        "{output}"
    );
    assert!(
        output.contains("rotate_key did not run: denied by api:you: not during the release freeze"),
        "{output}"
    );
    assert!(
        output.contains("the signed checkpoint covers all 7 records"),
        "{output}"
    );
}
