//! Test tokens and keys as the Bot Connector makes them (TEAMS.md §5).

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use approval_teams::auth::{ActivityFacts, InboundAuth, KeySet};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

pub const APP_ID: &str = "571c643a-c513-441e-9ca2-e01b48b9a0de";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SERVICE_URL: &str = "https://smba.trafficmanager.net/ch/";
pub const KID: &str = "T2SGCCyRTJ82ofF2Mcp-lbkJv2M";
pub const NOW: u64 = 1_647_362_000;

/// A test key from `tests/data` (included, so other crates' tests can use
/// this module too).
pub fn key(name: &str) -> RsaKeyPair {
    let der: &[u8] = match name {
        "test-rsa-2048.der" => include_bytes!("../data/test-rsa-2048.der"),
        "other-rsa-2048.der" => include_bytes!("../data/other-rsa-2048.der"),
        other => panic!("no test key {other}"),
    };
    RsaKeyPair::from_der(der).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWKS serving `key` under `kid`, endorsed for `endorsements`.
pub fn jwks(key: &RsaKeyPair, kid: &str, endorsements: Value) -> KeySet {
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
    let document = json!({"keys": [
        // A non-RSA key is ignored.
        {"kty": "EC", "kid": kid, "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid,
         "n": b64(&public.n),
         "e": b64(&public.e),
         "endorsements": endorsements}
    ]});
    serde_json::from_value(document).unwrap()
}

/// The JWKS document (JSON) serving `key` under `kid`, endorsed for `msteams`.
pub fn jwks_json(key: &RsaKeyPair, kid: &str) -> Value {
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
    json!({"keys": [{"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid,
                     "n": b64(&public.n), "e": b64(&public.e), "endorsements": ["msteams"]}]})
}

/// A token as TEAMS.md §5 shows one, signed by `key`.
pub fn token(key: &RsaKeyPair, header: Value, claims: Value) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("Bearer {signed}.{}", b64(&signature))
}

pub fn header() -> Value {
    json!({"alg": "RS256", "kid": KID, "typ": "JWT", "x5t": KID})
}

pub fn claims() -> Value {
    json!({"serviceurl": SERVICE_URL, "nbf": NOW - 100, "exp": NOW + 3500,
           "iss": "https://api.botframework.com", "aud": APP_ID})
}

pub fn activity() -> ActivityFacts<'static> {
    ActivityFacts {
        service_url: Some(SERVICE_URL),
        channel_id: "msteams",
        tenant_id: Some(TENANT),
    }
}

pub fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

pub fn auth() -> InboundAuth {
    InboundAuth::new(APP_ID).allow_tenant(TENANT)
}
