//! Running an approved body with a credential minted for it alone, and
//! revoking that credential however the body ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::GateInner;
use super::approval::{CatchUnwind, Confirmed};
use super::broker::{Credential, CredentialBroker, CredentialHandle, MintRequest};
use crate::error::ApprovalError;
use approval_audit::Event;

/// How often a failed revoke is tried, and the first pause between tries.
const REVOKE_ATTEMPTS: u32 = 3;
const REVOKE_FIRST_DELAY: Duration = Duration::from_millis(100);

impl Confirmed {
    /// Mints the policy's credential (recorded `credential_minted`), runs
    /// `body` with it, revokes it (recorded `credential_revoked`) and
    /// records how the body ended. The credential is revoked too when the
    /// body panics (after which the panic goes on) and when this future is
    /// dropped mid-body; a credential a crash left is revoked by the next
    /// [`Gate::recover`](super::Gate::recover).
    ///
    /// If the broker cannot mint, the body does not run: the request is
    /// recorded `cancelled` and the call refused with
    /// [`ApprovalError::Credential`].
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use approval_core::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let writer = Arc::new(ChainWriter::new(KeyId::new("k").unwrap(), &WriterSecret::generate().unwrap()));
    /// let broker = Arc::new(MockBroker::new(["select-table"]));
    /// let gate = Gate::builder(Arc::new(MemorySink::new(writer)))
    ///     .approver("mock", Arc::new(MockApprover::approve_all("ci")))
    ///     .broker("warehouse", broker.clone())
    ///     .policy(
    ///         Policy::new("data-export", ["mock"], Duration::from_secs(5))
    ///             .approvers(["mock:ci"])
    ///             .credential("warehouse", "select-table", Duration::from_secs(60)),
    ///     )
    ///     .build()?;
    /// let args = CanonicalJson::from_serialize(&serde_json::json!({"table": "users"}))?;
    /// let call = Call::new("crm::export", "data-export", args.clone()).takes_credential();
    /// let rows = gate
    ///     .approve(call)
    ///     .await?
    ///     .confirm_args(&args)
    ///     .await?
    ///     .execute_with_credential(|credential| async move {
    ///         assert!(credential.secret("token").is_some());
    ///         Ok::<_, ApprovalError>(5000)
    ///     })
    ///     .await?;
    /// assert_eq!(rows, 5000);
    /// assert!(broker.live().is_empty(), "revoked when the body ended");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn execute_with_credential<T, E, F, Fut>(self, body: F) -> Result<T, E>
    where
        F: FnOnce(Credential) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ApprovalError> + std::fmt::Display,
    {
        let (credential, minted) = self.mint().await?;
        let result = CatchUnwind(Box::pin(body(credential))).await;
        minted.revoke("the body ended").await;
        let (outcome, error) = self.outcome_of(&result);
        self.record(outcome, error).await?;
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Refuses to run a body without the credential its policy mints (the
    /// body would run with the process's own privileges instead): the
    /// request is recorded `cancelled`.
    pub(crate) async fn refuse_without_credential(&self) -> Result<(), ApprovalError> {
        let policy = &self.request().policy;
        if policy.credential.is_none() {
            return Ok(());
        }
        self.not_run("the body does not take the credential its policy mints")
            .await?;
        Err(ApprovalError::CredentialMismatch {
            policy: policy.name.clone(),
            policy_mints: true,
        })
    }

    /// Mints the policy's credential for this call and records it.
    pub(crate) async fn mint(&self) -> Result<(Credential, Minted), ApprovalError> {
        let request = self.request();
        let gate = self.gate_inner();
        let Some(spec) = &request.policy.credential else {
            self.not_run("the body takes a credential its policy does not mint")
                .await?;
            return Err(ApprovalError::CredentialMismatch {
                policy: request.policy.name.clone(),
                policy_mints: false,
            });
        };
        // The builder checked that the policy's broker is registered.
        let broker =
            gate.brokers
                .get(&spec.broker)
                .cloned()
                .ok_or_else(|| ApprovalError::Credential {
                    broker: spec.broker.clone(),
                    source: crate::BrokerError::Backend("not registered".into()),
                })?;
        let latest = gate.clock.now() + spec.lifetime();
        let minted = broker
            .mint(MintRequest {
                request,
                template: &spec.template,
                expires_at: latest,
            })
            .await;
        let mut credential = match minted {
            Ok(credential) => credential,
            // Traced by kind: a scope error can quote the arguments.
            Err(source) => {
                tracing::warn!(request_id = %request.id, broker = %spec.broker, error = source.kind(), "could not mint the call's credential; not run");
                self.not_run("the credential broker could not mint the call's credential")
                    .await?;
                return Err(ApprovalError::Credential {
                    broker: spec.broker.clone(),
                    source,
                });
            }
        };
        let handle = credential.handle_mut();
        handle.request_id.clone_from(&request.id);
        handle.broker.clone_from(&spec.broker);
        let handle = handle.clone();
        let minted = Minted {
            gate: gate.clone(),
            broker,
            handle,
            armed: true,
        };
        // A broker that overreaches is not trusted with the body.
        let fault = if minted.handle.expires_at > latest {
            Some("it works longer than the policy's credential lifetime")
        } else if !minted.handle.scope.is_object() {
            Some("its scope is not a JSON object")
        } else {
            None
        };
        if let Some(fault) = fault {
            minted.revoke_unrecorded().await;
            self.not_run("the credential broker minted a credential outside the policy")
                .await?;
            return Err(ApprovalError::Credential {
                broker: spec.broker.clone(),
                source: crate::BrokerError::Backend(format!("minted a credential: {fault}")),
            });
        }
        let written = gate
            .sink
            .append_event(Event::CredentialMinted {
                request_id: request.id.clone(),
                broker: spec.broker.clone(),
                credential_id: minted.handle.id.clone(),
                scope: minted.handle.scope.clone(),
                expires_at: minted.handle.expires_at,
            })
            .await;
        if let Err(e) = written {
            // Unrecorded, so it must not outlive this call.
            minted.revoke_unrecorded().await;
            return Err(e.into());
        }
        tracing::info!(request_id = %request.id, broker = %spec.broker, "credential minted");
        Ok((credential, minted))
    }
}

/// A minted credential that is revoked (and recorded so) exactly once:
/// by [`revoke`](Minted::revoke), or when dropped still armed (the caller
/// stopped waiting on the body), on the gate's runtime.
pub(crate) struct Minted {
    gate: Arc<GateInner>,
    broker: Arc<dyn CredentialBroker>,
    handle: CredentialHandle,
    armed: bool,
}

impl Minted {
    /// Revokes it now and records `credential_revoked`.
    pub(crate) async fn revoke(mut self, why: &str) {
        self.armed = false;
        revoke_and_record(&self.gate, self.broker.as_ref(), &self.handle, why).await;
    }

    /// Revokes one that was never recorded as minted.
    async fn revoke_unrecorded(mut self) {
        self.armed = false;
        if let Err(error) = revoke_with_retries(self.broker.as_ref(), &self.handle).await {
            tracing::error!(request_id = %self.handle.request_id, broker = %self.handle.broker, credential_id = %self.handle.id, %error, "could not revoke an unrecorded credential; it stops working at its expiry");
        }
    }
}

impl Drop for Minted {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (gate, broker, handle) = (self.gate.clone(), self.broker.clone(), self.handle.clone());
        self.gate.background.spawn(async move {
            revoke_and_record(
                &gate,
                broker.as_ref(),
                &handle,
                "the caller stopped waiting on the body",
            )
            .await;
        });
    }
}

/// Revokes `handle` (retrying) and records `credential_revoked`; `false`
/// (and an error traced) if either failed, which leaves the record open
/// for the next [`Gate::recover`](super::Gate::recover) to revoke again.
pub(crate) async fn revoke_and_record(
    gate: &GateInner,
    broker: &dyn CredentialBroker,
    handle: &CredentialHandle,
    why: &str,
) -> bool {
    if let Err(error) = revoke_with_retries(broker, handle).await {
        tracing::error!(request_id = %handle.request_id, broker = %handle.broker, credential_id = %handle.id, %error, "could not revoke a credential; it stops working at its expiry, and the next recover tries again");
        return false;
    }
    let written = gate
        .sink
        .append_event(Event::CredentialRevoked {
            request_id: handle.request_id.clone(),
            broker: handle.broker.clone(),
            credential_id: handle.id.clone(),
            why: why.into(),
        })
        .await;
    match written {
        Ok(_) => {
            tracing::info!(request_id = %handle.request_id, broker = %handle.broker, "credential revoked");
            true
        }
        Err(error) => {
            tracing::error!(request_id = %handle.request_id, broker = %handle.broker, credential_id = %handle.id, %error, "revoked a credential but could not record it");
            false
        }
    }
}

async fn revoke_with_retries(
    broker: &dyn CredentialBroker,
    handle: &CredentialHandle,
) -> Result<(), crate::BrokerError> {
    let mut delay = REVOKE_FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match broker.revoke(handle).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= REVOKE_ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::warn!(request_id = %handle.request_id, broker = %handle.broker, attempt, %error, "revoking a credential failed; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}
