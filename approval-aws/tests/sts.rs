//! The STS broker against a local STS and IAM (moto's server, started here
//! on 127.0.0.1): an approved call's body runs as a session named after its
//! request, with the session policy its template builds from the
//! arguments, lasting no longer than the policy allows; revoking it denies
//! that one session in its role's policies, and old denies are tidied.
//! Hostile arguments and too short a lifetime are refused before STS is
//! asked.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use approval_aws::{Credentials, Endpoints, SessionTemplate, StsBroker};
use approval_core::{
    ApprovalError, BrokerError, Call, CanonicalJson, ChainWriter, Clock, CredentialBroker,
    CredentialHandle, Gate, KeyId, ManualClock, MemorySink, MockApprover, Policy, SystemClock,
    WriterSecret,
};
use serde_json::{Value, json};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/exporter";

/// moto's server on a free loopback port, stopped when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("moto_server: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("moto_server: {e}");
        }
    }
}

/// `moto_server`: where `./scripts/test` installed it
/// (`APPROVAL_MOTO_SERVER`), else on the `PATH`.
#[allow(clippy::disallowed_methods, reason = "finding the program")]
fn moto_program() -> String {
    std::env::var("APPROVAL_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into())
}

async fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let program = moto_program();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{program}: {e}; moto's server is needed (./scripts/test installs it; \
                 or pip install 'moto[server]' and put moto_server on the PATH)"
            )
        });
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto_server did not listen on {port}");
}

/// An IAM or STS query call to moto (which checks no signature).
async fn query(moto: &Moto, params: &[(&str, &str)]) -> String {
    let response = reqwest::Client::new()
        .post(&moto.url)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(params)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{params:?}");
    response.text().await.unwrap()
}

/// The templates' role, `exporter`.
async fn create_role(moto: &Moto) {
    query(
        moto,
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", "exporter"),
            ("AssumeRolePolicyDocument", "{}"),
        ],
    )
    .await;
}

/// The names of the `exporter` role's inline policies.
async fn role_policies(moto: &Moto) -> Vec<String> {
    let listed = query(
        moto,
        &[
            ("Action", "ListRolePolicies"),
            ("Version", "2010-05-08"),
            ("RoleName", "exporter"),
        ],
    )
    .await;
    between(&listed, "<member>", "</member>")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn between<'a>(xml: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    xml.split(open)
        .skip(1)
        .filter_map(|rest| rest.split(close).next())
        .collect()
}

fn broker(moto: &Moto) -> StsBroker {
    StsBroker::new(
        Credentials::new("AKIDEXAMPLE", "broker-secret", None, None, "test"),
        Endpoints::custom("us-east-1", &moto.url, &moto.url),
    )
    .unwrap()
    .template(
        "read-prefix",
        SessionTemplate::new(ROLE_ARN).allow(["s3:GetObject"], ["arn:aws:s3:::{bucket}/{prefix}*"]),
    )
}

fn gate(broker: Arc<StsBroker>, lifetime: Duration) -> (Gate, Arc<MemorySink>) {
    let secret = WriterSecret::from_hex(&"71".repeat(32)).unwrap();
    let sink = Arc::new(MemorySink::new(Arc::new(ChainWriter::new(
        KeyId::new("k").unwrap(),
        &secret,
    ))));
    let gate = Gate::builder(sink.clone())
        .approver("mock", Arc::new(MockApprover::approve_all("ci")))
        .broker("aws", broker)
        .policy(
            Policy::new("export", ["mock"], Duration::from_secs(60))
                .approvers(["mock:ci"])
                .credential("aws", "read-prefix", lifetime),
        )
        .build()
        .unwrap();
    (gate, sink)
}

fn records(sink: &MemorySink) -> Vec<Value> {
    String::from_utf8(sink.bytes())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs an approved export of `args`; the body asks STS who it is, with
/// the session's keys.
async fn export(
    gate: &Gate,
    moto: &Moto,
    args: Value,
) -> Result<(String, String, String), ApprovalError> {
    let args = CanonicalJson::from_serialize(&args).unwrap();
    let confirmed = gate
        .approve(Call::new("t::export", "export", args.clone()).takes_credential())
        .await?
        .confirm_args(&args)
        .await?;
    let url = moto.url.clone();
    confirmed
        .execute_with_credential(|login| async move {
            let keys = Credentials::new(
                login.login().unwrap(),
                login.secret("secret_access_key").unwrap(),
                Some(login.secret("session_token").unwrap().to_owned()),
                None,
                "minted",
            );
            let config = aws_sdk_sts::Config::builder()
                .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
                .region(aws_sdk_sts::config::Region::new("us-east-1"))
                .endpoint_url(url)
                .credentials_provider(keys)
                .http_client(
                    aws_smithy_http_client::Builder::new()
                        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                        ))
                        .build_https(),
                )
                .build();
            let me = aws_sdk_sts::Client::from_conf(config)
                .get_caller_identity()
                .send()
                .await
                .unwrap();
            let secret = login.secret("secret_access_key").unwrap().to_owned();
            Ok((
                me.arn().unwrap().to_owned(),
                login.handle().id.clone(),
                secret,
            ))
        })
        .await
}

#[tokio::test]
async fn an_approved_call_runs_as_its_own_session_which_is_denied_after() {
    let moto = start_moto().await;
    create_role(&moto).await;
    let (gate, sink) = gate(Arc::new(broker(&moto)), Duration::from_secs(1200));
    let asked = SystemClock.now();
    let (arn, session_id, secret) = export(
        &gate,
        &moto,
        json!({"bucket": "reports", "prefix": "2026/q4/"}),
    )
    .await
    .unwrap();

    let all = records(&sink);
    let request_id = all[0]["request_id"].as_str().unwrap();
    assert_eq!(
        arn,
        format!("arn:aws:sts::123456789012:assumed-role/exporter/approval-{request_id}"),
        "the session carries the request id"
    );
    let minted = &all[3];
    assert_eq!(minted["event"], "credential_minted");
    assert_eq!(minted["credential_id"], session_id.as_str());
    assert_eq!(minted["scope"]["role_arn"], ROLE_ARN);
    assert_eq!(
        minted["scope"]["policy"]["Statement"][0]["Resource"],
        json!(["arn:aws:s3:::reports/2026/q4/*"])
    );
    let expires =
        approval_core::clock::parse_ts(minted["expires_at"].as_str().unwrap().as_bytes()).unwrap();
    let lifetime = expires.duration_since(asked).unwrap();
    assert!(
        lifetime <= Duration::from_secs(1200) && lifetime >= Duration::from_secs(1100),
        "{lifetime:?}"
    );
    let log = String::from_utf8(sink.bytes()).unwrap();
    assert!(!log.contains(&secret), "no key on record");

    // Revoked: a deny for this one session, in the role's policies.
    assert_eq!(all[4]["event"], "credential_revoked");
    let names = role_policies(&moto).await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("approval-revoked-") && names[0].ends_with(request_id));
    let policy = query(
        &moto,
        &[
            ("Action", "GetRolePolicy"),
            ("Version", "2010-05-08"),
            ("RoleName", "exporter"),
            ("PolicyName", &names[0]),
        ],
    )
    .await;
    let document = between(&policy, "<PolicyDocument>", "</PolicyDocument>")[0];
    // URL-encoded, as IAM returns policy documents.
    let decoded = percent_encoding::percent_decode_str(document)
        .decode_utf8()
        .unwrap();
    let document: Value =
        serde_json::from_str(&decoded).unwrap_or_else(|e| panic!("{e}: {decoded}"));
    assert_eq!(document["Statement"][0]["Effect"], "Deny");
    assert_eq!(
        document["Statement"][0]["Condition"]["StringEquals"]["aws:userid"],
        session_id.as_str()
    );
}

#[tokio::test]
async fn hostile_arguments_and_too_short_a_lifetime_are_refused_before_sts_is_asked() {
    let moto = start_moto().await;
    let (gate, sink) = gate(Arc::new(broker(&moto)), Duration::from_secs(1200));
    for bucket in ["*", "reports/{prefix}", "a b"] {
        let err = export(&gate, &moto, json!({"bucket": bucket, "prefix": "x"}))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApprovalError::Credential { source: BrokerError::Scope { why, .. }, .. } if why.contains("not a plain name")),
            "{bucket}: {err:?}"
        );
    }
    let (short, _) = gate_short(&moto);
    let err = export(&short, &moto, json!({"bucket": "reports", "prefix": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApprovalError::Credential { source: BrokerError::Scope { why, .. }, .. } if why.contains("at least 15 minutes")),
        "{err:?}"
    );
    assert!(
        records(&sink)
            .iter()
            .all(|r| r["event"] != "credential_minted")
    );
}

fn gate_short(moto: &Moto) -> (Gate, Arc<MemorySink>) {
    gate(Arc::new(broker(moto)), Duration::from_secs(600))
}

#[tokio::test]
async fn each_revoke_tidies_the_denies_of_sessions_that_ended_long_ago() {
    let moto = start_moto().await;
    create_role(&moto).await;
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let broker = broker(&moto).clock(clock.clone());
    let scope = CanonicalJson::from_serialize(&json!({"role_arn": ROLE_ARN})).unwrap();
    let handle = |request: &str| {
        CredentialHandle::new(
            request,
            "aws",
            format!("AROAEXAMPLE:approval-{request}"),
            scope.clone(),
            clock.now() + Duration::from_secs(900),
        )
    };
    broker.revoke(&handle("FIRST")).await.unwrap();
    // An hour on, the first session and its deny are long over.
    clock.advance(Duration::from_secs(3600));
    broker.revoke(&handle("SECOND")).await.unwrap();
    let names = role_policies(&moto).await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("-SECOND"), "{names:?}");

    // A session it did not mint is left alone.
    let mut foreign = handle("THIRD");
    foreign.id = "AROAEXAMPLE:someone-else".into();
    let err = broker.revoke(&foreign).await.unwrap_err();
    assert!(err.to_string().contains("left alone"), "{err}");
}
