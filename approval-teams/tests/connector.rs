//! The Bot Connector client against a fake Entra token endpoint and a fake
//! connector on 127.0.0.1, answering with TEAMS.md §1–2's payloads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_teams::connector::{BotCredentials, Connector, TeamsError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

const APP_ID: &str = "571c643a-c513-441e-9ca2-e01b48b9a0de";
const SECRET: &str = "bot-client-secret-for-tests";
const TENANT: &str = "3f3d1cea-7a18-41af-872b-cfbbd5140984";

#[derive(Default)]
struct Fake {
    /// Seconds each issued token lasts.
    lifetime: Mutex<u64>,
    tokens_issued: Mutex<u32>,
    /// Answers the connector gives before its usual one.
    script: Mutex<VecDeque<(u16, Option<&'static str>, String)>>,
    calls: Mutex<u32>,
}

async fn token(State(fake): State<Arc<Fake>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let good = tenant == TENANT
        && field("grant_type") == Some("client_credentials")
        && field("client_id") == Some(APP_ID)
        && field("scope") == Some("https://api.botframework.com/.default");
    if !good || field("client_secret") != Some(SECRET) {
        // TEAMS.md §1, Entra's error shape.
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. ...","error_codes":[7000215],"timestamp":"2024-01-01 00:00:00Z","trace_id":"t","correlation_id":"c"}"#;
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let mut issued = fake.tokens_issued.lock().unwrap();
    *issued += 1;
    let lifetime = *fake.lifetime.lock().unwrap();
    let body = format!(
        r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"eyJhbGciOiJIUzI1Ni.{issued}"}}"#
    );
    body.into_response()
}

async fn activities(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Path(conversation): Path<String>,
) -> Response {
    *fake.calls.lock().unwrap() += 1;
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer eyJhbGciOiJIUzI1Ni."));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"code":"BotNotRegistered","message":"no"}}"#,
        )
            .into_response();
    }
    assert_eq!(conversation, "19:LydF@thread.tacv2;messageid=1776390257332");
    if let Some((status, retry_after, body)) = fake.script.lock().unwrap().pop_front() {
        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.parse().unwrap());
        }
        return response;
    }
    (StatusCode::CREATED, r#"{"id":"1776390257332"}"#).into_response()
}

async fn serve(fake: Arc<Fake>) -> String {
    let app = axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
        .route(
            "/amer/v3/conversations/{conversation}/activities",
            axum::routing::post(activities),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

const PATH: &str =
    "/v3/conversations/19%3ALydF%40thread.tacv2%3Bmessageid%3D1776390257332/activities";

/// `expires_in` is the token endpoint's number: one past what an `Instant`
/// can hold panicked the call; it is capped (a day) and the token used.
#[tokio::test]
async fn a_token_lifetime_beyond_the_clock_is_capped_not_a_panic() {
    let fake = Arc::new(Fake::default());
    *fake.lifetime.lock().unwrap() = u64::MAX;
    let base = serve(fake.clone()).await;
    let service_url = format!("{base}/amer/");
    let card = json!({"type": "message", "attachments": []});
    let connector = Connector::new(BotCredentials::new(APP_ID, SECRET, TENANT)).login_url(&base);
    for _ in 0..2 {
        let sent = connector
            .call(reqwest::Method::POST, &service_url, PATH, &card)
            .await;
        assert_eq!(sent.unwrap(), json!({"id": "1776390257332"}));
    }
    assert_eq!(*fake.tokens_issued.lock().unwrap(), 1, "cached");
}

#[tokio::test]
async fn tokens_are_cached_and_refreshed_and_the_connector_s_errors_are_typed() {
    let fake = Arc::new(Fake::default());
    *fake.lifetime.lock().unwrap() = 3600;
    let base = serve(fake.clone()).await;
    let service_url = format!("{base}/amer/");
    let card = json!({"type": "message", "attachments": []});
    let connector = Connector::new(BotCredentials::new(APP_ID, SECRET, TENANT)).login_url(&base);
    let post = || connector.call(reqwest::Method::POST, &service_url, PATH, &card);
    assert_eq!(post().await.unwrap(), json!({"id": "1776390257332"}));
    post().await.unwrap();
    assert_eq!(*fake.tokens_issued.lock().unwrap(), 1, "cached");

    // 429 with Retry-After: waited, then sent.
    fake.script.lock().unwrap().push_back((
        429,
        Some("1"),
        r#"{"error":{"code":"Throttled","message":"slow down"}}"#.into(),
    ));
    let started = Instant::now();
    post().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    // 412 and 503: backoff, then sent.
    fake.script
        .lock()
        .unwrap()
        .extend([(412, None, String::new()), (503, None, String::new())]);
    post().await.unwrap();
    // Down for good: four attempts, then Unavailable.
    let before = *fake.calls.lock().unwrap();
    fake.script
        .lock()
        .unwrap()
        .extend((0..4).map(|_| (503, None, String::new())));
    let err = post().await.unwrap_err();
    assert!(
        matches!(&err, TeamsError::Unavailable { cause } if cause.contains("503")),
        "{err}"
    );
    assert_eq!(*fake.calls.lock().unwrap() - before, 4);
    // A refusal is not retried, and names Teams' code.
    let before = *fake.calls.lock().unwrap();
    fake.script.lock().unwrap().push_back((403, None, r#"{"error":{"code":"BotNotInConversationRoster","message":"The bot is not part of the conversation roster."}}"#.into()));
    assert_eq!(
        post().await.unwrap_err(),
        TeamsError::Refused {
            status: 403,
            code: "BotNotInConversationRoster".into()
        }
    );
    assert_eq!(*fake.calls.lock().unwrap() - before, 1);

    // A token close to its end is refreshed first.
    let fake = Arc::new(Fake::default());
    *fake.lifetime.lock().unwrap() = 301;
    let base = serve(fake.clone()).await;
    let service_url = format!("{base}/amer/");
    let connector = Connector::new(BotCredentials::new(APP_ID, SECRET, TENANT)).login_url(&base);
    connector
        .call(reqwest::Method::POST, &service_url, PATH, &card)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    connector
        .call(reqwest::Method::POST, &service_url, PATH, &card)
        .await
        .unwrap();
    assert_eq!(*fake.tokens_issued.lock().unwrap(), 2);

    // Wrong secret: Entra's code, and the secret nowhere in the error.
    let wrong =
        Connector::new(BotCredentials::new(APP_ID, "not-the-secret", TENANT)).login_url(&base);
    let err = wrong
        .call(reqwest::Method::POST, &service_url, PATH, &card)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TeamsError::Token {
            code: "invalid_client".into()
        }
    );
    assert!(!format!("{err} {err:?} {wrong:?}").contains("not-the-secret"));
}
