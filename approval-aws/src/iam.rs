//! The three IAM calls revocation needs, on IAM's query API, signed with
//! SigV4: putting a role's inline policy, listing and deleting them.

use approval_core::Clock;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// IAM's API version, as its query API names it.
const VERSION: &str = "2010-05-08";
/// IAM is global; requests to it are signed for this region.
const SIGNING_REGION: &str = "us-east-1";

/// An IAM call that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IamError {
    /// IAM answered with an error code (`NoSuchEntity`, `AccessDenied`).
    #[error("IAM refused {action}: {code}")]
    Api { action: String, code: String },
    /// Signing or the HTTP exchange failed.
    #[error("IAM {action}: {cause}")]
    Transport { action: String, cause: String },
}

impl IamError {
    pub(crate) fn is_no_such_entity(&self) -> bool {
        matches!(self, Self::Api { code, .. } if code == "NoSuchEntity")
    }
}

/// A signing client for IAM's query API.
pub(crate) struct Iam {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
}

impl Iam {
    pub(crate) fn new(endpoint: String, credentials: Credentials) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            endpoint,
            credentials,
        })
    }

    /// Calls `action` with `params`; the response body on success.
    pub(crate) async fn call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<String, IamError> {
        let transport = |cause: String| IamError::Transport {
            action: action.to_owned(),
            cause,
        };
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", VERSION)];
        form.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&form).map_err(|e| transport(e.to_string()))?;
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(SIGNING_REGION)
            .name("iam")
            .time(approval_core::SystemClock.now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| transport(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &self.endpoint,
            [("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| transport(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| transport(e.to_string()))?
            .into_parts();
        let mut request = self
            .http
            .post(&self.endpoint)
            .header("content-type", content_type);
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| transport(e.to_string()))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(IamError::Api {
            action: action.to_owned(),
            code: element(&text, "Code").unwrap_or_else(|| format!("HTTP {status}")),
        })
    }
}

/// The text of the first `<name>` element in `xml`.
pub(crate) fn element(xml: &str, name: &str) -> Option<String> {
    elements(xml, name).next()
}

/// The text of every `<name>` element in `xml`, in order (IAM's responses
/// are flat and never nest an element in one of the same name).
pub(crate) fn elements<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = String> + 'a {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = rest[start..].find(&close)? + start;
        let text = rest[start..end].to_owned();
        rest = &rest[end + close.len()..];
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_read_in_order() {
        let xml = "<R><PolicyNames><member>a</member><member>b-1</member></PolicyNames>\
                   <IsTruncated>false</IsTruncated></R>";
        assert_eq!(elements(xml, "member").collect::<Vec<_>>(), ["a", "b-1"]);
        assert_eq!(element(xml, "IsTruncated").as_deref(), Some("false"));
        assert_eq!(element(xml, "Code"), None);
    }
}
