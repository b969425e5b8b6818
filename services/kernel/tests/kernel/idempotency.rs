//! Retried mutations replay the first response and act once, even when retries race.

use codingagent_kernel::config::{DatabaseConfig, Secret};
use codingagent_kernel::db;
use codingagent_kernel::idempotency::{self, Key};
use codingagent_kernel::identity::Caller;
use codingagent_testkit::TestDatabase;
use codingagent_testkit::pb::{SleepRequest, SleepResponse};
use sqlx::PgPool;
use std::time::Duration;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");

/// A mutation: inserts a thing, and answers with its id, unless a retry replays the answer.
async fn create_thing(pool: &PgPool, caller: &str, request_id: &str) -> SleepResponse {
    create(pool, &Caller::user(caller), request_id, b"thing").await.unwrap()
}

/// `create_thing` as any caller, with a request body of its choice.
async fn create(
    pool: &PgPool,
    caller: &Caller,
    request_id: &str,
    body: &[u8],
) -> Result<SleepResponse, idempotency::Error> {
    let request = SleepRequest { millis: 0, payload: body.to_vec() };
    let key = Key::new(caller, "CreateThing", request_id, &request);
    let mut tx = pool.begin().await.unwrap();
    if let Some(first) = key.replay::<SleepResponse>(&mut tx).await? {
        return Ok(first);
    }
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO things (id) VALUES ($1)").bind(&id).execute(&mut *tx).await.unwrap();
    // Long enough for concurrent retries to pile up on the lock.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = SleepResponse { payload: id.into_bytes() };
    key.remember(&mut tx, &response).await.unwrap();
    tx.commit().await.unwrap();
    Ok(response)
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
    assert_eq!(idempotency::purge(&pool, idempotency::RETENTION).await.unwrap(), 0);
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE scope = 'user:alice'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(idempotency::purge(&pool, idempotency::RETENTION).await.unwrap(), 1);
    pool.close().await;
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn keys_belong_to_the_effective_user_and_to_one_request() {
    let database = TestDatabase::create().await.unwrap();
    let config = DatabaseConfig { url: Secret::new(database.url.clone()), ..DatabaseConfig::default() };
    let pool = db::connect(&config, "kernel_idem_scope", &MIGRATIONS).await.unwrap();

    // A service acting for alice, then for bob, with the same request_id: bob must not get
    // alice's answer (the key used to be the service's own name).
    let for_alice = Caller::service_for("chat", "alice", Vec::new());
    let for_bob = Caller::service_for("chat", "bob", Vec::new());
    let alices = create(&pool, &for_alice, "shared-id", b"thing").await.unwrap();
    let bobs = create(&pool, &for_bob, "shared-id", b"thing").await.unwrap();
    assert_ne!(bobs, alices, "bob replayed alice's stored response");
    assert_eq!(things(&pool).await, 2);
    // Alice calling directly is the same scope as the service acting for her.
    assert_eq!(create(&pool, &Caller::user("alice"), "shared-id", b"thing").await.unwrap(), alices);

    // The same request_id with a different request is refused, and nothing acts.
    let reused = create(&pool, &for_alice, "shared-id", b"another thing").await;
    assert!(matches!(reused, Err(idempotency::Error::Reused)), "{reused:?}");
    let status = tonic::Status::from(reused.unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(things(&pool).await, 2);
    pool.close().await;
    database.drop_database().await.unwrap();
}
