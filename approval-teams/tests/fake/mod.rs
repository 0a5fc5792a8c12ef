//! A fake Microsoft Teams on 127.0.0.1: the Entra token endpoint (§1), the
//! Bot Connector (§2), the OpenID metadata and keys (§5), answering with
//! TEAMS.md's payloads; and invokes as Teams sends them (§4.1), signed with
//! the test key.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::common::{KID, key, token};

pub const APP_ID: &str = "571c643a-c513-441e-9ca2-e01b48b9a0de";
pub const SECRET: &str = "bot-client-secret-for-tests";
pub const TENANT: &str = "3f3d1cea-7a18-41af-872b-cfbbd5140984";
pub const CHANNEL: &str = "19:LydF3a9d@thread.tacv2";

/// TEAMS.md §1: Entra's token answer.
const TOKEN_ANSWER: &str = r#"{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"eyJhbGciOiJIUzI1Ni..."}"#;
/// TEAMS.md §2.1: a refused conversation creation.
const BAD_SYNTAX: &str =
    r#"{"error":{"code":"BadSyntax","message":"Incorrect conversation creation parameters"}}"#;
/// TEAMS.md §4.1: an invoke from a click on an `Action.Execute`, as
/// captured (teams.net's fixture).
const INVOKE: &str = r#"{"type":"invoke","name":"adaptiveCard/action","channelId":"msteams","id":"f:17b96347-e8b4-f340-10bc-eb52fc1a6ad4",
 "serviceUrl":"https://smba.trafficmanager.net/amer/56653e9d-2158-46ee-90d7-675c39642038/",
 "channelData":{"tenant":{"id":"56653e9d-2158-46ee-90d7-675c39642038"},"source":{"name":"message"},"legacy":{"replyToId":"1:12SWreU4…"}},
 "from":{"id":"29:1uMVvhoAy…","name":"Rido","aadObjectId":"c5e99701-2a32-49c1-a660-4629ceeb8c61"},
 "recipient":{"id":"28:aabdbd62-bc97-4afb-83ee-575594577de5","name":"ridobotlocal"},
 "conversation":{"id":"a:17vxw6p…","conversationType":"personal","tenantId":"56653e9d-2158-46ee-90d7-675c39642038"},
 "entities":[{"type":"clientInfo","locale":"en-US","country":"US","platform":"Web","timezone":"America/Los_Angeles"}],
 "value":{"action":{"type":"Action.Execute","title":"Submit Feedback","data":{"feedback":"test invokes"}},"trigger":"manual"},
 "timestamp":"2026-01-07T06:04:59.89Z","localTimestamp":"2026-01-06T22:04:59.89-08:00",
 "replyToId":"1767765488332","locale":"en-US","localTimezone":"America/Los_Angeles"}"#;

/// One card the fake connector holds, and every version of it.
#[derive(Debug, Clone)]
pub struct Posted {
    pub conversation: String,
    pub activity_id: String,
    /// The activity as posted, then as each PUT replaced it.
    pub versions: Vec<Value>,
}

#[derive(Default)]
pub struct Teams {
    pub base: String,
    tokens_issued: u32,
    /// 1:1 chats by member id.
    chats: HashMap<String, String>,
    conversations_created: u32,
    pub cards: Vec<Posted>,
    /// Replies to a posted card: (conversation, the card's activity id,
    /// the reply).
    pub replies: Vec<(String, String, Value)>,
    /// Answers the connector gives before its usual one.
    script: VecDeque<(u16, Option<&'static str>, String)>,
    next_id: u64,
}

pub type Fake = Arc<Mutex<Teams>>;

impl Teams {
    /// Makes the next connector call answer `status` (with `Retry-After`)
    /// and `body`.
    pub fn fail_next(&mut self, status: u16, retry_after: Option<&'static str>, body: &str) {
        self.script
            .push_back((status, retry_after, body.to_owned()));
    }

    pub fn conversations_created(&self) -> u32 {
        self.conversations_created
    }

    /// The service URL the fake connector answers on.
    pub fn service_url(&self) -> String {
        format!("{}/amer/", self.base)
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("17763902573{:02}", self.next_id)
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        json!({"error": {"code": code, "message": "fake"}}).to_string(),
    )
        .into_response()
}

/// The bearer token is one this fake issued, and no scripted answer is due.
fn gatekeeper(fake: &Fake, headers: &HeaderMap) -> Option<Response> {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "Bearer eyJhbGciOiJIUzI1Ni...");
    if !authorized {
        return Some(error(StatusCode::UNAUTHORIZED, "BotNotRegistered"));
    }
    let content_json = headers
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    if !content_json {
        return Some(error(StatusCode::BAD_REQUEST, "BadSyntax"));
    }
    let (status, retry_after, body) = fake.lock().unwrap().script.pop_front()?;
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.parse().unwrap());
    }
    Some(response)
}

/// A message activity carrying one Adaptive Card (TEAMS.md §2.2, §3).
fn card_message(activity: &Value) -> bool {
    let attachment = &activity["attachments"][0];
    activity["type"] == "message"
        && activity.get("text").is_none()
        && attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        && attachment["content"]["type"] == "AdaptiveCard"
        && attachment["content"]["version"] == "1.5"
}

async fn token_endpoint(
    State(fake): State<Fake>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let good = tenant == TENANT
        && field("grant_type") == Some("client_credentials")
        && field("client_id") == Some(APP_ID)
        && field("client_secret") == Some(SECRET)
        && field("scope") == Some("https://api.botframework.com/.default");
    if !good {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. ...","error_codes":[7000215],"timestamp":"2024-01-01 00:00:00Z","trace_id":"t","correlation_id":"c"}"#;
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    fake.lock().unwrap().tokens_issued += 1;
    TOKEN_ANSWER.into_response()
}

async fn create_conversation(
    State(fake): State<Fake>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = gatekeeper(&fake, &headers) {
        return refused;
    }
    let parameters: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut teams = fake.lock().unwrap();
    if parameters["tenantId"] != TENANT {
        return (StatusCode::BAD_REQUEST, BAD_SYNTAX).into_response();
    }
    match parameters["isGroup"].as_bool() {
        // A 1:1 chat: the same member gets the same chat.
        Some(false) => {
            let Some(member) = parameters["members"][0]["id"]
                .as_str()
                .filter(|m| m.starts_with("29:"))
            else {
                return (StatusCode::BAD_REQUEST, BAD_SYNTAX).into_response();
            };
            teams.conversations_created += 1;
            let next = teams.chats.len();
            let id = teams
                .chats
                .entry(member.to_owned())
                .or_insert_with(|| format!("a:1p0iicaJ{next}"))
                .clone();
            (StatusCode::CREATED, json!({"id": id}).to_string()).into_response()
        }
        // A new thread in a channel: its root is the activity.
        Some(true) => {
            let activity = &parameters["activity"];
            let channel = parameters["channelData"]["channel"]["id"].as_str();
            if channel != Some(CHANNEL) || !card_message(activity) {
                return (StatusCode::BAD_REQUEST, BAD_SYNTAX).into_response();
            }
            teams.conversations_created += 1;
            let activity_id = teams.id();
            let conversation = format!("{CHANNEL};messageid={activity_id}");
            teams.cards.push(Posted {
                conversation: conversation.clone(),
                activity_id: activity_id.clone(),
                versions: vec![activity.clone()],
            });
            (
                StatusCode::CREATED,
                json!({"id": conversation, "activityId": activity_id}).to_string(),
            )
                .into_response()
        }
        None => (StatusCode::BAD_REQUEST, BAD_SYNTAX).into_response(),
    }
}

async fn send(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path(conversation): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = gatekeeper(&fake, &headers) {
        return refused;
    }
    let activity: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut teams = fake.lock().unwrap();
    if !teams.chats.values().any(|c| *c == conversation) {
        return error(StatusCode::NOT_FOUND, "ConversationNotFound");
    }
    if !card_message(&activity) {
        return error(StatusCode::BAD_REQUEST, "Bad Argument");
    }
    let activity_id = teams.id();
    teams.cards.push(Posted {
        conversation,
        activity_id: activity_id.clone(),
        versions: vec![activity],
    });
    (StatusCode::OK, json!({"id": activity_id}).to_string()).into_response()
}

/// TEAMS.md §2, reply in thread: to an activity the conversation holds.
async fn reply(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path((conversation, activity_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(refused) = gatekeeper(&fake, &headers) {
        return refused;
    }
    let activity: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut teams = fake.lock().unwrap();
    if !teams
        .cards
        .iter()
        .any(|c| c.conversation == conversation && c.activity_id == activity_id)
    {
        return error(StatusCode::NOT_FOUND, "ActivityNotFoundInConversation");
    }
    if !card_message(&activity) {
        return error(StatusCode::BAD_REQUEST, "Bad Argument");
    }
    let id = teams.id();
    teams.replies.push((conversation, activity_id, activity));
    (StatusCode::OK, json!({"id": id}).to_string()).into_response()
}

async fn update(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path((conversation, activity_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(refused) = gatekeeper(&fake, &headers) {
        return refused;
    }
    let activity: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut teams = fake.lock().unwrap();
    let Some(card) = teams
        .cards
        .iter_mut()
        .find(|c| c.conversation == conversation && c.activity_id == activity_id)
    else {
        return error(StatusCode::NOT_FOUND, "ActivityNotFoundInConversation");
    };
    if !card_message(&activity) || activity["id"] != activity_id.as_str() {
        return error(StatusCode::BAD_REQUEST, "Bad Argument");
    }
    card.versions.push(activity);
    (StatusCode::OK, json!({"id": activity_id}).to_string()).into_response()
}

async fn metadata(State(fake): State<Fake>) -> String {
    let base = fake.lock().unwrap().base.clone();
    // TEAMS.md §5's metadata, with the keys on the fake.
    json!({"issuer": "https://api.botframework.com",
           "authorization_endpoint": "https://invalid.botframework.com",
           "jwks_uri": format!("{base}/v1/.well-known/keys"),
           "id_token_signing_alg_values_supported": ["RS256"],
           "token_endpoint_auth_methods_supported": ["private_key_jwt"]})
    .to_string()
}

async fn keys() -> String {
    crate::common::jwks_json(&key("test-rsa-2048.der"), KID).to_string()
}

/// Starts the fake; returns it (its `base` set).
pub async fn fake_teams() -> Fake {
    let fake = Fake::default();
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
        .route("/amer/v3/conversations", post(create_conversation))
        .route(
            "/amer/v3/conversations/{conversation}/activities",
            post(send),
        )
        .route(
            "/amer/v3/conversations/{conversation}/activities/{activity}",
            axum::routing::put(update).post(reply),
        )
        .route("/v1/.well-known/openidconfiguration", get(metadata))
        .route("/v1/.well-known/openid-configuration", get(metadata))
        .route("/v1/.well-known/keys", get(keys))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.lock().unwrap().base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    fake
}

/// The `n`th card posted, once it is there (bounded wait).
pub async fn nth_card(fake: &Fake, n: usize) -> Posted {
    wait_for(fake, |t| t.cards.get(n).cloned()).await
}

/// Waits (at most 10 s) until `probe` finds something.
pub async fn wait_for<T>(fake: &Fake, probe: impl Fn(&Teams) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = probe(&fake.lock().unwrap()) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fake Teams never saw it"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The card content of an activity.
pub fn content(activity: &Value) -> &Value {
    &activity["attachments"][0]["content"]
}

/// The action `verb` on the card as first posted.
pub fn action<'a>(posted: &'a Posted, verb: &str) -> &'a Value {
    content(&posted.versions[0])["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["verb"] == verb)
        .unwrap()
}

/// A click as Teams sends it (TEAMS.md §4.1's capture, with this fake's
/// service URL and tenant): `verb` on the card `posted`, by the user whose
/// Entra object id is `object_id`, with the card's action data and the
/// typed `comment`.
pub fn click(
    fake: &Fake,
    posted: &Posted,
    verb: &str,
    object_id: &str,
    comment: Option<&str>,
) -> Value {
    let action = action(posted, verb);
    let mut data = action["data"].clone();
    data["comment"] = Value::String(comment.unwrap_or_default().to_owned());
    let mut invoke: Value = serde_json::from_str(INVOKE).unwrap();
    invoke["id"] = Value::String(format!("f:{object_id}-{verb}-{}", posted.activity_id));
    invoke["serviceUrl"] = Value::String(fake.lock().unwrap().service_url());
    invoke["channelData"]["tenant"]["id"] = Value::String(TENANT.into());
    invoke["conversation"]["id"] = Value::String(posted.conversation.clone());
    invoke["conversation"]["tenantId"] = Value::String(TENANT.into());
    invoke["from"]["aadObjectId"] = Value::String(object_id.into());
    invoke["from"]["name"] = Value::String(format!("User {object_id}"));
    invoke["recipient"]["id"] = Value::String(format!("28:{APP_ID}"));
    invoke["replyToId"] = Value::String(posted.activity_id.clone());
    invoke["value"]["action"] = json!({"type": "Action.Execute", "title": action["title"],
                                       "verb": verb, "data": data});
    invoke
}

/// A Bot Connector token for `activity` (TEAMS.md §5), valid now.
pub fn bearer_for(activity: &Value) -> String {
    let now = approval_core::Clock::now(&approval_core::SystemClock)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    token(
        &key("test-rsa-2048.der"),
        crate::common::header(),
        json!({"serviceurl": activity["serviceUrl"], "nbf": now - 10, "exp": now + 3590,
               "iss": "https://api.botframework.com", "aud": APP_ID}),
    )
}
