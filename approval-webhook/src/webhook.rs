//! The webhook approver: each request POSTed, signed, to the receiver.

use std::time::Duration;

use approval_core::{
    ApprovalRequest, Approver, ApproverError, BallotOutcome, Ballots, Clock, GateBallots,
    RejectReason, SystemClock,
};
use async_trait::async_trait;
use std::sync::Arc;

use crate::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSecret};
use crate::vote::{CHANNEL, VoteMessage};
use approval_http::RequestDocument;

/// How many attempts a delivery gets (the first and the retries).
const ATTEMPTS: u32 = 4;
/// The largest answer read from the receiver (a vote is a few hundred
/// bytes): a receiver, or whoever answers in its place, cannot make the
/// gate buffer without limit.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The first retry after a 5xx or a lost connection waits this long,
/// doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Delivers each request to a receiver you run, as a signed JSON `POST`
/// (the [`RequestDocument`](approval_http::RequestDocument), with `callback`: the
/// URL votes go to, if configured).
///
/// The receiver answers:
/// - `202 Accepted` (or `200` with an empty body): reviewers decide later;
///   their votes come to [`callback::router`](crate::callback::router);
/// - `200` with a [vote](crate::VoteMessage), signed with the inbound
///   secret as the callback's votes are: the vote is cast at once (one
///   that does not verify is recorded as `rejected_vote` and the call
///   fails closed);
/// - `4xx`: the receiver refused the request; the call fails closed;
/// - `5xx`, or no answer: retried with backoff (four attempts in all);
///   then the call fails closed naming the cause.
///
/// ```no_run
/// use std::sync::Arc;
/// use approval_webhook::{HttpApprover, WebhookSecret};
///
/// # fn setup(builder: approval_core::GateBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let approver = HttpApprover::builder(
///     "https://tickets.example.com/approval-requests",
///     WebhookSecret::new("outbound secret: we sign requests with it"),
///     WebhookSecret::new("inbound secret: the receiver signs votes with it"),
/// )
/// .callback("https://agent.example.com/approval/votes")
/// .build();
/// let gate = builder.approver("tickets", Arc::new(approver)).build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HttpApprover {
    url: String,
    callback: Option<String>,
    outbound: WebhookSecret,
    pub(crate) inbound: WebhookSecret,
    client: reqwest::Client,
    ballots: GateBallots,
    clock: Arc<dyn Clock>,
}

/// How to build an [`HttpApprover`]; from [`HttpApprover::builder`].
#[derive(Debug)]
#[must_use]
pub struct HttpApproverBuilder {
    approver: HttpApprover,
}

impl HttpApproverBuilder {
    /// The callback URL the request document names, so the receiver knows
    /// where votes go.
    pub fn callback(mut self, url: impl Into<String>) -> Self {
        self.approver.callback = Some(url.into());
        self
    }

    /// How long one delivery attempt may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.approver.client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        self
    }

    /// Reads the time through `clock` (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.approver.clock = clock;
        self
    }

    /// The approver.
    pub fn build(self) -> HttpApprover {
        self.approver
    }
}

impl HttpApprover {
    /// Delivers to `url`, signing requests with `outbound` and checking
    /// votes with `inbound`. Use two different secrets: the receiver needs
    /// only `inbound` to vote, and only `outbound` to check requests.
    pub fn builder(
        url: impl Into<String>,
        outbound: WebhookSecret,
        inbound: WebhookSecret,
    ) -> HttpApproverBuilder {
        HttpApproverBuilder {
            approver: Self {
                url: url.into(),
                callback: None,
                outbound,
                inbound,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
                ballots: GateBallots::default(),
                clock: Arc::new(SystemClock),
            },
        }
    }

    /// Where votes go (`None` until the approver is in a built gate).
    pub fn ballots(&self) -> Option<Ballots> {
        self.ballots.get()
    }

    pub(crate) fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    /// POSTs `body`, signed; retries 5xx and connection errors. Returns the
    /// answer's status, signature headers and body.
    async fn post(&self, body: &[u8]) -> Result<Answer, ApproverError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let timestamp = self
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sent = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, self.outbound.sign(timestamp, body))
                .body(body.to_vec())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_server_error() => {
                    last = format!("HTTP {}", response.status());
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let header = |name| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let (timestamp, signature) =
                        (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
                    let body = read_capped(response, MAX_ANSWER_BYTES).await?;
                    return Ok(Answer {
                        status,
                        timestamp,
                        signature,
                        body,
                    });
                }
                // reqwest's errors name the URL, never the headers.
                Err(e) => last = e.without_url().to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(ApproverError::Unreachable(format!(
            "receiver unavailable after {ATTEMPTS} attempts: {last}"
        )))
    }
}

/// The body of `response`, refused once it passes `limit` bytes (by its
/// `Content-Length` or as it arrives).
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ApproverError> {
    let too_large =
        || ApproverError::Refused(format!("the receiver's answer is over {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApproverError::Unreachable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

struct Answer {
    status: u16,
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

#[async_trait]
impl Approver for HttpApprover {
    fn attach(&self, ballots: Ballots) -> Result<(), ApproverError> {
        // One gate per approver: another gate's ballots are refused.
        self.ballots.attach(ballots)
    }

    async fn deliver(
        &self,
        request: Arc<ApprovalRequest>,
        ballots: Ballots,
    ) -> Result<(), ApproverError> {
        let mut document = RequestDocument::of(&request);
        document.callback.clone_from(&self.callback);
        let body = serde_json::to_vec(&document)
            .map_err(|e| ApproverError::Refused(format!("request document: {e}")))?;
        let answer = self.post(&body).await?;
        match answer.status {
            202 => return Ok(()),
            200 if answer.body.iter().all(u8::is_ascii_whitespace) => return Ok(()),
            200 => {}
            status => {
                return Err(ApproverError::Refused(format!(
                    "receiver answered HTTP {status}"
                )));
            }
        }
        // A vote in the answer: trusted only if signed with the inbound
        // secret, like the callback's.
        if let Err(why) = self.inbound.verify(
            answer.timestamp.as_deref(),
            answer.signature.as_deref(),
            &answer.body,
            self.now(),
        ) {
            let reason = match why {
                crate::SignatureError::Stale => RejectReason::Replayed,
                _ => RejectReason::BadSignature,
            };
            ballots.refuse(&request.id, CHANNEL, reason);
            return Err(ApproverError::Refused(format!(
                "the receiver's vote did not verify: {why}"
            )));
        }
        let Some((vote, binding)) = VoteMessage::parse(&answer.body) else {
            return Err(ApproverError::Refused(
                "the receiver's answer is not a vote".into(),
            ));
        };
        match ballots.cast(vote.ballot(binding)).await {
            Ok(BallotOutcome::Rejected(why)) => Err(ApproverError::Refused(format!(
                "the receiver's vote was refused: {}",
                why.as_str()
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(ApproverError::Unreachable(format!(
                "the receiver's vote could not be recorded: {e}"
            ))),
        }
    }
}
