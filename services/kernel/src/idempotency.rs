//! Idempotent retries of mutations (STYLE §8): a mutation that carries a `request_id` records
//! its response in the same transaction as its effects, and a retry with the same caller,
//! method and `request_id` gets that response back instead of acting again. Concurrent
//! retries are serialised by a transaction-scoped advisory lock on the key, so exactly one
//! of them acts.

use crate::error::FieldViolation;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// How long responses are kept for replay.
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

/// One mutation's idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub caller: &'a str,
    pub method: &'a str,
    pub request_id: &'a str,
}

impl Key<'_> {
    /// Inside the mutation's transaction: waits for any concurrent call with the same key,
    /// then returns the response recorded by an earlier call, if there was one. A call
    /// without a `request_id` is not idempotent: nothing is looked up.
    pub async fn replay<M: prost::Message + Default>(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Option<M>, sqlx::Error> {
        if self.request_id.is_empty() {
            return Ok(None);
        }
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3, 0))",
        )
        .bind(self.caller)
        .bind(self.method)
        .bind(self.request_id)
        .execute(&mut *conn)
        .await?;
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT response FROM idempotency_keys WHERE caller = $1 AND method = $2 AND request_id = $3 \
             AND created_at > now() - make_interval(secs => $4)",
        )
        .bind(self.caller)
        .bind(self.method)
        .bind(self.request_id)
        .bind(RETENTION.as_secs_f64())
        .fetch_optional(&mut *conn)
        .await?;
        // A stored response that no longer decodes (the message changed) is treated as absent.
        Ok(stored.and_then(|bytes| M::decode(bytes.as_slice()).ok()))
    }

    /// Inside the same transaction, after the effects: records the response for retries
    /// (nothing without a `request_id`).
    pub async fn remember<M: prost::Message>(
        &self,
        conn: &mut PgConnection,
        response: &M,
    ) -> Result<(), sqlx::Error> {
        if self.request_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (caller, method, request_id, response) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (caller, method, request_id) DO UPDATE SET response = EXCLUDED.response, created_at = now()",
        )
        .bind(self.caller)
        .bind(self.method)
        .bind(self.request_id)
        .bind(response.encode_to_vec())
        .execute(conn)
        .await
        .map(drop)
    }
}

/// Deletes responses older than [`RETENTION`]; services run it periodically.
pub async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
        .bind(RETENTION.as_secs_f64())
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
}
