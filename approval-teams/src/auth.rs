//! Inbound authentication (TEAMS.md §5): every request to the bot's
//! messaging endpoint carries a JWT from the Bot Connector, checked here in
//! the order Microsoft lays out. None of it can be switched off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde::Deserialize;

/// The Bot Framework's token issuer (public cloud).
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";
/// How far `exp` and `nbf` may be off (TEAMS.md §5, step 6).
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a request's token was refused. Each is answered 401 and nothing
/// else happens; the variants say which check failed, for logs and tests
/// (never for the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer <token>` header.
    #[error("no bearer token")]
    MissingBearer,
    /// Not a JWT: three base64url parts, JSON header and claims.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not RS256, or `kid` is missing.
    #[error("the token's algorithm is not RS256 (or it names no key)")]
    Algorithm,
    /// `iss` is not the Bot Framework's.
    #[error("the token's issuer is not the Bot Framework")]
    Issuer,
    /// No RSA key with the token's `kid` (the caller may refetch the keys
    /// once, then refuses).
    #[error("no key with the token's kid")]
    UnknownKey {
        /// The `kid` the token names.
        kid: String,
    },
    /// The signature does not verify with that key.
    #[error("the token's signature does not verify")]
    Signature,
    /// `aud` is not this bot's app id.
    #[error("the token is for another audience")]
    Audience,
    /// `exp` is more than five minutes past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is more than five minutes ahead.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The `serviceurl` claim does not match the activity's `serviceUrl`.
    #[error("the token's serviceurl does not match the activity")]
    ServiceUrl,
    /// The key's endorsements do not include the activity's channel.
    #[error("the signing key is not endorsed for this channel")]
    Endorsement,
    /// The activity's `serviceUrl` is not on the allowlist.
    #[error("the activity's serviceUrl is not an allowed host")]
    ServiceUrlNotAllowed,
    /// The activity's tenant is not an allowed one.
    #[error("the activity's tenant is not allowed")]
    Tenant,
    /// The signing keys could not be fetched (and none are held).
    #[error("the signing keys are unavailable: {cause}")]
    KeysUnavailable {
        /// Why.
        cause: String,
    },
}

/// One key of the Bot Framework's JWKS, with its non-standard
/// `endorsements` (TEAMS.md §5).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    /// Key type; only `RSA` keys are used.
    pub kty: String,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default)]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default)]
    pub e: Option<String>,
    /// Channel ids the key is endorsed for; absent or empty: any.
    #[serde(default)]
    pub endorsements: Option<Vec<String>>,
}

/// A JWKS document: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// What of the activity the checks need.
#[derive(Debug, Clone, Copy)]
pub struct ActivityFacts<'a> {
    /// `serviceUrl`.
    pub service_url: Option<&'a str>,
    /// `channelId` (`msteams`).
    pub channel_id: &'a str,
    /// `channelData.tenant.id` (or `conversation.tenantId`).
    pub tenant_id: Option<&'a str>,
}

/// What a checked token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `serviceurl`: where replies for this conversation go.
    pub service_url: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    serviceurl: Option<String>,
}

/// The checks for one bot: its app id, the issuer, the service URL hosts
/// and the tenants it accepts.
///
/// ```
/// use approval_teams::auth::InboundAuth;
///
/// let auth = InboundAuth::new("571c643a-c513-441e-9ca2-e01b48b9a0de")
///     .allow_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47");
/// ```
#[derive(Debug, Clone)]
pub struct InboundAuth {
    app_id: String,
    issuer: String,
    service_hosts: Vec<String>,
    tenants: Vec<String>,
}

fn json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `url` without one trailing `/`, lower-cased.
fn normalized(url: &str) -> String {
    url.strip_suffix('/').unwrap_or(url).to_ascii_lowercase()
}

impl InboundAuth {
    /// Checks for the bot whose Microsoft app id is `app_id`, with the
    /// public cloud's issuer and service URL hosts (TEAMS.md §5, step 9),
    /// and no tenant allowed yet: add them with
    /// [`allow_tenant`](Self::allow_tenant).
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            issuer: BOT_FRAMEWORK_ISSUER.into(),
            service_hosts: vec![
                "smba.trafficmanager.net".into(),
                "smba.onyx.prod.teams.trafficmanager.net".into(),
                "smba.infra.gcc.teams.microsoft.com".into(),
            ],
            tenants: Vec::new(),
        }
    }

    /// Accepts activities from tenant `tenant_id`.
    #[must_use]
    pub fn allow_tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenants.push(tenant_id.into().to_ascii_lowercase());
        self
    }

    /// Replaces the allowed service URL hosts (`https` only, except that a
    /// loopback host may use `http`: tests' fake connectors).
    #[must_use]
    pub fn service_hosts<I: IntoIterator<Item = S>, S: Into<String>>(mut self, hosts: I) -> Self {
        self.service_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `host` to the allowed service URL hosts (a Bot Connector
    /// endpoint of a cloud not in the defaults).
    #[must_use]
    pub fn allow_service_host(mut self, host: impl Into<String>) -> Self {
        self.service_hosts.push(host.into());
        self
    }

    /// Uses another issuer (a sovereign cloud's, TEAMS.md §5).
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Whether `url` is on an allowed host, over https (or http on a
    /// loopback host).
    fn service_url_allowed(&self, url: &str) -> bool {
        let (scheme, rest) = match url.split_once("://") {
            Some(parts) => parts,
            None => return false,
        };
        let host_port = rest.split('/').next().unwrap_or_default();
        if host_port.contains('@') {
            return false;
        }
        let host = host_port
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host_port, |(host, _)| host)
            .to_ascii_lowercase();
        let loopback = host == "127.0.0.1" || host == "localhost";
        let scheme_ok = scheme.eq_ignore_ascii_case("https")
            || (loopback && scheme.eq_ignore_ascii_case("http"));
        scheme_ok
            && self
                .service_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&host))
    }

    /// Checks the `Authorization` header's value for `activity` against
    /// `keys`, at `now`, in TEAMS.md §5's order.
    pub fn check(
        &self,
        authorization: Option<&str>,
        activity: &ActivityFacts<'_>,
        keys: &KeySet,
        now: SystemTime,
    ) -> Result<Claims, AuthError> {
        // 1. `Bearer <token>`.
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && !t.contains(' '))
            .ok_or(AuthError::MissingBearer)?;
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = json(header_part)?;
        let payload: Payload = json(payload_part)?;
        // 2. RS256 only, and a key id; never the token's choice of algorithm.
        let kid = match (header.alg.as_str(), header.kid) {
            ("RS256", Some(kid)) => kid,
            _ => return Err(AuthError::Algorithm),
        };
        // 3. The issuer, before any key is looked at.
        if payload.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(AuthError::Issuer);
        }
        // 4. The key by `kid`, and the signature.
        let key = keys
            .keys
            .iter()
            .find(|k| k.kty == "RSA" && k.kid.as_deref() == Some(kid.as_str()))
            .ok_or_else(|| AuthError::UnknownKey { kid: kid.clone() })?;
        let decode = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or(AuthError::Signature)
        };
        let (n, e) = (decode(&key.n)?, decode(&key.e)?);
        let signature = URL_SAFE_NO_PAD
            .decode(signature_part)
            .map_err(|_| AuthError::Malformed)?;
        let signed = &token[..header_part.len() + 1 + payload_part.len()];
        RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
            .map_err(|_| AuthError::Signature)?;
        // 5. The audience: this bot (or the api:// forms Teams SDKs accept).
        let audience_ok = payload.aud.as_deref().is_some_and(|aud| {
            aud == self.app_id
                || aud == format!("api://{}", self.app_id)
                || aud == format!("api://botid-{}", self.app_id)
        });
        if !audience_ok {
            return Err(AuthError::Audience);
        }
        // 6. Lifetime, with five minutes' skew; both claims required.
        let now = unix(now);
        let skew = CLOCK_SKEW.as_secs();
        match payload.exp {
            Some(exp) if now <= exp.saturating_add(skew) => {}
            _ => return Err(AuthError::Expired),
        }
        match payload.nbf {
            Some(nbf) if nbf <= now.saturating_add(skew) => {}
            _ => return Err(AuthError::NotYetValid),
        }
        // 7. `serviceurl` (lower case) equals the activity's.
        if let Some(service_url) = activity.service_url {
            match payload.serviceurl.as_deref() {
                Some(claim) if normalized(claim) == normalized(service_url) => {}
                _ => return Err(AuthError::ServiceUrl),
            }
        }
        // 8. Endorsements, when the key has any.
        if let Some(endorsements) = key.endorsements.as_ref().filter(|e| !e.is_empty())
            && !endorsements.iter().any(|e| e == activity.channel_id)
        {
            return Err(AuthError::Endorsement);
        }
        // 9. Where replies would go, and who is asking.
        if let Some(service_url) = activity.service_url
            && !self.service_url_allowed(service_url)
        {
            return Err(AuthError::ServiceUrlNotAllowed);
        }
        let tenant_ok = activity
            .tenant_id
            .is_some_and(|t| self.tenants.iter().any(|a| a.eq_ignore_ascii_case(t)));
        if !tenant_ok {
            return Err(AuthError::Tenant);
        }
        Ok(Claims {
            service_url: payload.serviceurl,
        })
    }
}
