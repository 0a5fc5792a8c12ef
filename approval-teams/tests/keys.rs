//! The signing keys through a fake OpenID metadata and JWKS server on
//! 127.0.0.1 answering as TEAMS.md §5 shows: fetched once and cached, a
//! rotated key picked up on its first unknown `kid`, and at most one such
//! refetch per interval.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approval_teams::auth::AuthError;
use approval_teams::keys::KeyCache;
use axum::extract::State;
use serde_json::{Value, json};

mod common;

use common::*;

#[derive(Default)]
struct Fake {
    base: Mutex<String>,
    keys: Mutex<Value>,
    metadata_fetches: AtomicUsize,
    key_fetches: AtomicUsize,
}

async fn metadata(State(fake): State<Arc<Fake>>) -> String {
    fake.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    let base = fake.base.lock().unwrap().clone();
    // TEAMS.md §5's metadata, with the keys on the fake.
    json!({"issuer": "https://api.botframework.com",
           "authorization_endpoint": "https://invalid.botframework.com",
           "jwks_uri": format!("{base}/v1/.well-known/keys"),
           "id_token_signing_alg_values_supported": ["RS256"],
           "token_endpoint_auth_methods_supported": ["private_key_jwt"]})
    .to_string()
}

async fn keys(State(fake): State<Arc<Fake>>) -> String {
    fake.key_fetches.fetch_add(1, Ordering::SeqCst);
    fake.keys.lock().unwrap().to_string()
}

#[tokio::test]
async fn keys_are_cached_a_rotation_is_picked_up_and_unknown_kids_refetch_rarely() {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *fake.base.lock().unwrap() = base.clone();
    let signing = key("test-rsa-2048.der");
    *fake.keys.lock().unwrap() = jwks_json(&signing, KID);
    let app = axum::Router::new()
        // Both spellings (TEAMS.md §5).
        .route(
            "/v1/.well-known/openidconfiguration",
            axum::routing::get(metadata),
        )
        .route(
            "/v1/.well-known/openid-configuration",
            axum::routing::get(metadata),
        )
        .route("/v1/.well-known/keys", axum::routing::get(keys))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cache = KeyCache::new(format!("{base}/v1/.well-known/openidconfiguration"))
        .intervals(Duration::from_secs(3600), Duration::from_secs(2));
    let auth = auth();
    let good = token(&signing, header(), claims());
    for _ in 0..3 {
        cache
            .check(&auth, Some(&good), &activity(), at(NOW))
            .await
            .unwrap();
    }
    assert_eq!(fake.metadata_fetches.load(Ordering::SeqCst), 1, "cached");
    assert_eq!(fake.key_fetches.load(Ordering::SeqCst), 1);

    // The Bot Framework rotates to a new key: the first token signed with
    // it makes one refetch, and passes.
    let rotated = key("other-rsa-2048.der");
    *fake.keys.lock().unwrap() = jwks_json(&rotated, "rotated-kid");
    let mut new_header = header();
    new_header["kid"] = "rotated-kid".into();
    let fresh = token(&rotated, new_header, claims());
    cache
        .check(&auth, Some(&fresh), &activity(), at(NOW))
        .await
        .unwrap();
    assert_eq!(fake.key_fetches.load(Ordering::SeqCst), 2);
    // A token naming yet another kid: no refetch within the interval.
    let mut stray = header();
    stray["kid"] = "stray-kid".into();
    let stray = token(&rotated, stray, claims());
    assert_eq!(
        cache.check(&auth, Some(&stray), &activity(), at(NOW)).await,
        Err(AuthError::UnknownKey {
            kid: "stray-kid".into()
        })
    );
    assert_eq!(fake.key_fetches.load(Ordering::SeqCst), 2);
    // After it, one more.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        cache
            .check(&auth, Some(&stray), &activity(), at(NOW))
            .await
            .is_err()
    );
    assert_eq!(fake.key_fetches.load(Ordering::SeqCst), 3);

    // No metadata server at all, no keys held: refused, saying why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nowhere = KeyCache::new(format!(
        "http://{closed}/v1/.well-known/openidconfiguration"
    ));
    let err = nowhere
        .check(&auth, Some(&good), &activity(), at(NOW))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable { .. }), "{err}");
}
