//! Retried mutations replay the first response and act once, even when retries race.

use codingagent_kernel::config::{DatabaseConfig, Secret};
use codingagent_kernel::db;
use codingagent_kernel::idempotency::{self, Key};
use codingagent_testkit::TestDatabase;
use codingagent_testkit::pb::SleepResponse;
use sqlx::PgPool;
use std::time::Duration;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");

/// A mutation: inserts a thing, and answers with its id, unless a retry replays the answer.
async fn create_thing(pool: &PgPool, caller: &str, request_id: &str) -> SleepResponse {
    let key = Key { caller, method: "CreateThing", request_id };
    let mut tx = pool.begin().await.unwrap();
    if let Some(first) = key.replay::<SleepResponse>(&mut tx).await.unwrap() {
        return first;
    }
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO things (id) VALUES ($1)").bind(&id).execute(&mut *tx).await.unwrap();
    // Long enough for concurrent retries to pile up on the lock.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = SleepResponse { payload: id.into_bytes() };
    key.remember(&mut tx, &response).await.unwrap();
    tx.commit().await.unwrap();
    response
}

async fn things(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM things").fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn retries_replay_the_first_response_and_act_once() {
    let database = TestDatabase::create().await.unwrap();
    let config = DatabaseConfig { url: Secret::new(database.url.clone()), ..DatabaseConfig::default() };
    let pool = db::connect(&config, "kernel_idem", &MIGRATIONS).await.unwrap();

    let first = create_thing(&pool, "alice", "req-1").await;
    let retry = create_thing(&pool, "alice", "req-1").await;
    assert_eq!(retry, first);
    assert_eq!(things(&pool).await, 1);

    // Keys belong to their caller: bob's identical request_id is a different request.
    assert_ne!(create_thing(&pool, "bob", "req-1").await, first);
    assert_eq!(things(&pool).await, 2);

    // Without a request_id nothing is replayed or remembered: every call acts.
    let keys_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_ne!(create_thing(&pool, "dave", "").await, create_thing(&pool, "dave", "").await);
    assert_eq!(things(&pool).await, 4);
    let keys_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(keys_after, keys_before);

    // Five racing retries: one acts, all get its answer.
    let racing = (0..5).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { create_thing(&pool, "carol", "req-race").await })
    });
    let answers: Vec<SleepResponse> =
        futures::future::join_all(racing).await.into_iter().map(Result::unwrap).collect();
    assert!(answers.iter().all(|a| a == &answers[0]));
    assert_eq!(things(&pool).await, 5);

    // Responses expire after the retention period.
    assert_eq!(idempotency::purge(&pool).await.unwrap(), 0);
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE caller = 'alice'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(idempotency::purge(&pool).await.unwrap(), 1);
    pool.close().await;
    database.drop_database().await.unwrap();
}
