//! One job purges what the kernel's tables accumulate in every service schema: published
//! outbox rows, inbox rows older than any redelivery, idempotency responses past their replay
//! window and dead letters already replayed. Without it these tables grew forever.
//!
//! The inbox window must outlast the longest time Kafka can redeliver an event (the topics'
//! retention), or a late redelivery would be applied twice; its default is twice Kafka's
//! default retention of seven days.

use crate::config::RetentionConfig;
use crate::server::Background;
use sqlx::PgPool;
use std::time::Duration;

/// Rows removed by one run, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub outbox: u64,
    pub inbox: u64,
    pub idempotency: u64,
    pub dead_letters: u64,
}

/// The periodic job for a service's schema.
pub fn job(pool: PgPool, config: &RetentionConfig) -> Background {
    let config = config.clone();
    Background::periodic("retention", Duration::from_secs(config.interval_secs), move || {
        let pool = pool.clone();
        let config = config.clone();
        async move {
            let purged = purge(&pool, &config).await?;
            if purged != Purged::default() {
                tracing::info!(?purged, "purged kernel tables");
            }
            Ok(())
        }
    })
}

/// Deletes every row past its window; batches keep each statement's locks short.
pub async fn purge(pool: &PgPool, config: &RetentionConfig) -> Result<Purged, sqlx::Error> {
    // Each statement deletes up to 10,000 rows older than `$1` seconds.
    let batch = |table: &str, key: &str, condition: &str| {
        format!(
            "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} \
             WHERE {condition} < now() - make_interval(secs => $1) LIMIT 10000)"
        )
    };
    let hours = |h: u64| (h * 3600) as f64;
    Ok(Purged {
        outbox: batched(pool, &batch("outbox", "id", "sent_at"), hours(config.outbox_hours)).await?,
        inbox: batched(
            pool,
            &batch("inbox", "consumer, event_id", "processed_at"),
            hours(config.inbox_hours),
        )
        .await?,
        idempotency: crate::idempotency::purge(pool, Duration::from_secs(config.idempotency_hours * 3600))
            .await?,
        dead_letters: batched(
            pool,
            &batch("dead_letters", "id", "replayed_at"),
            hours(config.dead_letter_hours),
        )
        .await?,
    })
}

async fn batched(pool: &PgPool, sql: &str, window_secs: f64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(sql).bind(window_secs).execute(pool).await?.rows_affected();
        total += deleted;
        if deleted < 10_000 {
            return Ok(total);
        }
    }
}
