//! Idempotent retries of mutations (STYLE §8): a mutation that carries a `request_id` records
//! its response in the same transaction as its effects, and a retry with the same scope,
//! method and `request_id` gets that response back instead of acting again. Concurrent
//! retries are serialised by a transaction-scoped advisory lock on the key, so exactly one
//! of them acts.
//!
//! Keys are scoped by the *effective user*: a service acting for alice shares alice's scope,
//! so bob cannot replay alice's answer by sending her `request_id` through the same service.
//! Each key also remembers a fingerprint (SHA-256) of the request it answered; reusing a
//! `request_id` for a different request is `INVALID_ARGUMENT`, as Stripe's API does, rather
//! than a silent replay of an unrelated answer.

use crate::error::FieldViolation;
use crate::identity::Caller;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// How long responses are kept for replay (the default of the retention job).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The longest `request_id` accepted.
pub const MAX_REQUEST_ID: usize = 64;

/// Checks a `request_id` (empty means "not idempotent").
pub fn validate(field: &str, request_id: &str) -> Result<(), FieldViolation> {
    if request_id.len() > MAX_REQUEST_ID || request_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldViolation::new(field, format!("at most {MAX_REQUEST_ID} characters, no spaces")));
    }
    Ok(())
}

/// Why a key could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request_id was already used for a different request")]
    Reused,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Reused => crate::error::invalid_argument([reused_violation()]),
            Error::Database(error) => crate::error::database(&error),
        }
    }
}

/// The violation a reused `request_id` reports, for services that collect violations.
pub fn reused_violation() -> FieldViolation {
    FieldViolation::new("request_id", "was already used for a different request; use a new request_id")
}

/// One mutation's idempotency key.
#[derive(Debug, Clone)]
pub struct Key<'a> {
    scope: String,
    method: &'a str,
    request_id: &'a str,
    fingerprint: [u8; 32],
}

impl<'a> Key<'a> {
    /// The key of `request` sent by `caller` to `method`. The whole request is fingerprinted,
    /// `request_id` included, so any other field that differs makes a reuse.
    pub fn new(caller: &Caller, method: &'a str, request_id: &'a str, request: &impl prost::Message) -> Self {
        let mut hash = Sha256::new();
        hash.update(method.as_bytes());
        hash.update([0]);
        hash.update(request.encode_to_vec());
        Self { scope: caller.principal_key(), method, request_id, fingerprint: hash.finalize().into() }
    }

    /// The caller's `request_id`; empty when the call is not idempotent.
    pub fn request_id(&self) -> &str {
        self.request_id
    }

    /// Inside the mutation's transaction: waits for any concurrent call with the same key,
    /// then returns the response recorded by an earlier call, if there was one. A call
    /// without a `request_id` is not idempotent: nothing is looked up.
    pub async fn replay<M: prost::Message + Default>(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Option<M>, Error> {
        if self.request_id.is_empty() {
            return Ok(None);
        }
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3, 0))",
        )
        .bind(&self.scope)
        .bind(self.method)
        .bind(self.request_id)
        .execute(&mut *conn)
        .await?;
        let stored: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT response, fingerprint FROM idempotency_keys \
             WHERE scope = $1 AND method = $2 AND request_id = $3",
        )
        .bind(&self.scope)
        .bind(self.method)
        .bind(self.request_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((response, fingerprint)) = stored else { return Ok(None) };
        // Rows from before fingerprints existed carry none and replay as before.
        if fingerprint.is_some_and(|stored| stored != self.fingerprint) {
            return Err(Error::Reused);
        }
        // A stored response that no longer decodes (the message changed) is treated as absent.
        Ok(M::decode(response.as_slice()).ok())
    }

    /// Inside the same transaction, after the effects: records the response for retries
    /// (nothing without a `request_id`).
    pub async fn remember<M: prost::Message>(
        &self,
        conn: &mut PgConnection,
        response: &M,
    ) -> Result<(), Error> {
        if self.request_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, method, request_id, response, fingerprint) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (scope, method, request_id) DO UPDATE \
             SET response = EXCLUDED.response, fingerprint = EXCLUDED.fingerprint, created_at = now()",
        )
        .bind(&self.scope)
        .bind(self.method)
        .bind(self.request_id)
        .bind(response.encode_to_vec())
        .bind(self.fingerprint.as_slice())
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Runs one durable mutation in a transaction, idempotently: a retry with the same key gets
/// the first response (and `None`: nothing to announce); otherwise `act` runs, its response
/// is remembered for retries and the transaction commits, and what `act` wants announced
/// after the commit (a fan-out, a cache invalidation) comes back for the caller to announce.
/// Announcing only after the commit means nobody hears of a change that rolled back.
pub async fn mutate<R, A, E>(
    pool: &PgPool,
    key: &Key<'_>,
    act: impl AsyncFnOnce(&mut PgConnection) -> Result<(R, A), E>,
) -> Result<(R, Option<A>), E>
where
    R: prost::Message + Default,
    E: From<Error> + From<sqlx::Error>,
{
    let mut tx = pool.begin().await?;
    if let Some(done) = key.replay(&mut tx).await? {
        return Ok((done, None));
    }
    let (response, announce) = act(&mut tx).await?;
    key.remember(&mut tx, &response).await?;
    tx.commit().await?;
    Ok((response, Some(announce)))
}

/// Deletes responses older than `retention`; the kernel's retention job runs it.
pub async fn purge(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
        .bind(retention.as_secs_f64())
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(validate("request_id", "").is_ok());
        assert!(validate("request_id", "0191d7a4-0000-7000-8000-000000000001").is_ok());
        assert!(validate("request_id", &"x".repeat(65)).is_err());
        assert!(validate("request_id", "has space").is_err());
    }

    #[test]
    fn a_service_acting_for_a_user_shares_that_users_scope() {
        let alice = Caller::user("alice");
        let chat_for_alice = Caller::service_for("chat", "alice", Vec::new());
        let chat_for_bob = Caller::service_for("chat", "bob", Vec::new());
        let scope = |caller: &Caller| Key::new(caller, "M", "r", &prost_types::Duration::default()).scope;
        assert_eq!(scope(&alice), scope(&chat_for_alice));
        assert_ne!(scope(&chat_for_alice), scope(&chat_for_bob));
        assert_ne!(scope(&Caller::service("alice")), scope(&alice));
    }

    #[test]
    fn the_fingerprint_covers_the_method_and_every_field() {
        let caller = Caller::user("alice");
        let a = prost_types::Duration { seconds: 1, nanos: 0 };
        let b = prost_types::Duration { seconds: 2, nanos: 0 };
        let key = |method, request| Key::new(&caller, method, "r1", request).fingerprint;
        assert_eq!(key("Create", &a), key("Create", &a));
        assert_ne!(key("Create", &a), key("Create", &b));
        assert_ne!(key("Create", &a), key("Update", &a));
    }
}
