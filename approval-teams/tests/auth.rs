//! Inbound authentication (TEAMS.md §5): a token as the Bot Connector
//! makes it passes, and each check fails on its own.

use approval_teams::auth::{ActivityFacts, AuthError, InboundAuth};
use serde_json::{Value, json};

mod common;

use common::*;

#[test]
fn a_bot_connector_token_passes_and_each_check_fails_on_its_own() {
    let signing = key("test-rsa-2048.der");
    let keys = jwks(&signing, KID, json!(["msteams"]));
    let check =
        |authorization: &str| auth().check(Some(authorization), &activity(), &keys, at(NOW));
    let with = |change: &dyn Fn(&mut Value, &mut Value)| {
        let (mut header, mut claims) = (header(), claims());
        change(&mut header, &mut claims);
        token(&signing, header, claims)
    };

    let good = with(&|_, _| {});
    let claims_seen = check(&good).unwrap();
    assert_eq!(claims_seen.service_url.as_deref(), Some(SERVICE_URL));

    // 1. The bearer scheme.
    assert_eq!(
        auth().check(None, &activity(), &keys, at(NOW)),
        Err(AuthError::MissingBearer)
    );
    assert_eq!(
        check(&good.replace("Bearer ", "Basic ")),
        Err(AuthError::MissingBearer)
    );
    assert_eq!(check("Bearer not.a-jwt"), Err(AuthError::Malformed));
    // 2. RS256 only, with a kid.
    for alg in ["HS256", "none", "RS384"] {
        assert_eq!(
            check(&with(&|h, _| h["alg"] = alg.into())),
            Err(AuthError::Algorithm),
            "{alg}"
        );
    }
    assert_eq!(
        check(&with(&|h, _| {
            h.as_object_mut().unwrap().remove("kid");
        })),
        Err(AuthError::Algorithm)
    );
    // 3. The issuer (the emulator's is refused too).
    for iss in [
        "https://api.botframework.us",
        "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/",
    ] {
        assert_eq!(
            check(&with(&|_, c| c["iss"] = iss.into())),
            Err(AuthError::Issuer)
        );
    }
    // 4. The key: unknown kid; signed by another key.
    assert_eq!(
        check(&with(&|h, _| h["kid"] = "another-kid".into())),
        Err(AuthError::UnknownKey {
            kid: "another-kid".into()
        })
    );
    let forged = token(&key("other-rsa-2048.der"), header(), claims());
    assert_eq!(check(&forged), Err(AuthError::Signature));
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut changed = claims();
        changed["aud"] = "someone-else".into();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(changed.to_string().as_bytes()),
            parts[2]
        )
    };
    assert_eq!(check(&tampered), Err(AuthError::Signature));
    // 5. The audience; the api:// forms are accepted.
    assert_eq!(
        check(&with(&|_, c| c["aud"] = "another-app".into())),
        Err(AuthError::Audience)
    );
    assert!(check(&with(&|_, c| c["aud"] = format!("api://{APP_ID}").into())).is_ok());
    // 6. Lifetime with five minutes' skew, either side.
    assert!(check(&with(&|_, c| c["exp"] = (NOW - 299).into())).is_ok());
    assert_eq!(
        check(&with(&|_, c| c["exp"] = (NOW - 301).into())),
        Err(AuthError::Expired)
    );
    assert!(check(&with(&|_, c| c["nbf"] = (NOW + 299).into())).is_ok());
    assert_eq!(
        check(&with(&|_, c| c["nbf"] = (NOW + 301).into())),
        Err(AuthError::NotYetValid)
    );
    assert_eq!(
        check(&with(&|_, c| {
            c.as_object_mut().unwrap().remove("nbf");
        })),
        Err(AuthError::NotYetValid)
    );
    // 7. serviceurl: one trailing slash and case aside, it must match.
    assert!(
        check(&with(
            &|_, c| c["serviceurl"] = "https://SMBA.trafficmanager.net/ch".into()
        ))
        .is_ok()
    );
    assert_eq!(
        check(&with(
            &|_, c| c["serviceurl"] = "https://smba.trafficmanager.net/emea/".into()
        )),
        Err(AuthError::ServiceUrl)
    );
    assert_eq!(
        check(&with(&|_, c| {
            c.as_object_mut().unwrap().remove("serviceurl");
        })),
        Err(AuthError::ServiceUrl)
    );
    // 8. A key endorsed for other channels only.
    let webchat = jwks(&signing, KID, json!(["webchat"]));
    assert_eq!(
        auth().check(Some(&good), &activity(), &webchat, at(NOW)),
        Err(AuthError::Endorsement)
    );
    let unendorsed = jwks(&signing, KID, json!([]));
    assert!(
        auth()
            .check(Some(&good), &activity(), &unendorsed, at(NOW))
            .is_ok()
    );
    // 9. The service URL's host and the tenant.
    for url in [
        "https://evil.example.com/ch/",
        "http://smba.trafficmanager.net/ch/",
        "https://smba.trafficmanager.net@evil.example.com/",
    ] {
        let token = with(&|_, c| c["serviceurl"] = url.into());
        let facts = ActivityFacts {
            service_url: Some(url),
            ..activity()
        };
        assert_eq!(
            auth().check(Some(&token), &facts, &keys, at(NOW)),
            Err(AuthError::ServiceUrlNotAllowed),
            "{url}"
        );
    }
    let loopback = "http://127.0.0.1:3978/";
    let token_loopback = with(&|_, c| c["serviceurl"] = loopback.into());
    let facts = ActivityFacts {
        service_url: Some(loopback),
        ..activity()
    };
    assert!(
        auth()
            .service_hosts(["127.0.0.1"])
            .check(Some(&token_loopback), &facts, &keys, at(NOW))
            .is_ok()
    );
    for tenant in [Some("00000000-0000-0000-0000-000000000000"), None] {
        let facts = ActivityFacts {
            tenant_id: tenant,
            ..activity()
        };
        assert_eq!(
            auth().check(Some(&good), &facts, &keys, at(NOW)),
            Err(AuthError::Tenant)
        );
    }
    assert_eq!(
        InboundAuth::new(APP_ID).check(Some(&good), &activity(), &keys, at(NOW)),
        Err(AuthError::Tenant),
        "no tenant allowed until one is named"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// `exp` and `nbf` anywhere in `u64`, the clock anywhere it can be:
    /// never a panic, and the lifetime rule (five minutes' skew) exactly.
    #[test]
    fn any_token_lifetime_is_answered_by_the_rule(exp: u64, nbf: u64, now in 0u64..4_000_000_000) {
        let signing = key("test-rsa-2048.der");
        let keys = jwks(&signing, KID, json!(["msteams"]));
        let mut claims = claims();
        claims["exp"] = exp.into();
        claims["nbf"] = nbf.into();
        let answer = auth().check(Some(&token(&signing, header(), claims)), &activity(), &keys, at(now));
        let skew = 300;
        let expected = if u128::from(now) > u128::from(exp) + skew {
            Err(AuthError::Expired)
        } else if u128::from(nbf) > u128::from(now) + skew {
            Err(AuthError::NotYetValid)
        } else {
            Ok(())
        };
        proptest::prop_assert_eq!(answer.map(|_| ()), expected);
    }
}
