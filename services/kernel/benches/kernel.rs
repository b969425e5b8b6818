//! Hot paths of the kernel: what every request pays (identity, error statuses, the whole
//! server skeleton on loopback) and what every event pays (outbox to Kafka).
//! Run with `cargo bench -p codingagent-kernel`; results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

#[path = "../tests/kernel/harness.rs"]
#[allow(dead_code)]
mod harness;

use codingagent_kernel::config::{DatabaseConfig, IdentityConfig, KafkaConfig, Secret};
use codingagent_kernel::identity::{Caller, TokenMinter, TokenVerifier};
use codingagent_kernel::kafka::{enqueue, relay::Relay, topics};
use codingagent_kernel::{db, error};
use codingagent_proto::codingagent::events::v1::TaskCreated;
use codingagent_testkit::pb::SleepRequest;
use codingagent_testkit::{TestDatabase, unique_name};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn identity(c: &mut Criterion) {
    let config = IdentityConfig::default();
    let minter = TokenMinter::new(&config);
    let verifier = TokenVerifier::new(&config);
    let caller = Caller::user("alice");
    let token = minter.mint(&caller).unwrap();
    c.bench_function("identity/verify", |b| b.iter(|| verifier.verify(black_box(&token)).unwrap()));
    c.bench_function("identity/mint", |b| b.iter(|| minter.mint(black_box(&caller)).unwrap()));
}

/// What the frame adds to every mutation (the request fingerprint) and to every server stream
/// (taking and freeing the caller's stream slot); goal < 5 µs each.
fn frame(c: &mut Criterion) {
    use codingagent_kernel::idempotency::Key;
    use codingagent_kernel::server::{MethodTable, StreamLimitLayer};
    use tower::{Layer, Service, ServiceExt};
    // The caller's clone is part of the measured cost: the layer reads it from extensions.
    let caller = Caller::service_for("chat", "alice", Vec::new());
    let request = SleepRequest { millis: 0, payload: vec![7; 1024] };
    c.bench_function("idempotency/key_with_fingerprint_1kib", |b| {
        b.iter(|| {
            Key::new(
                black_box(&caller),
                "PostMessage",
                "0191d7a4-0000-7000-8000-000000000001",
                black_box(&request),
            )
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let methods = std::sync::Arc::new(MethodTable::new(&[], &[]));
    let inner = tower::service_fn(|_request: http::Request<tonic::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
    });
    let mut limited = StreamLimitLayer::new(methods, 32).layer(inner);
    c.bench_function("limits/stream_slot_take_and_free", |b| {
        b.iter(|| {
            let mut request = http::Request::new(tonic::body::Body::empty());
            *request.uri_mut() = http::Uri::from_static("/grpc.health.v1.Health/Watch");
            request.extensions_mut().insert(caller.clone());
            let response =
                runtime.block_on(async { limited.ready().await.unwrap().call(request).await.unwrap() });
            // Dropping the response body frees the slot, as a finished stream does.
            drop(black_box(response));
        })
    });
}

fn statuses(c: &mut Criterion) {
    c.bench_function("error/invalid_argument_two_fields", |b| {
        b.iter(|| {
            error::invalid_argument([
                error::FieldViolation::new("text", "must not be empty"),
                error::FieldViolation::new("page_size", "must not be negative"),
            ])
        })
    });
}

fn unary_rpc(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, client) = runtime.block_on(async {
        let server = harness::TestServer::start(harness::server_config(), vec![]).await;
        let client = server.client_as("alice").await;
        (server, client)
    });
    c.bench_function("rpc/unary_through_skeleton", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = client.clone();
            async move { client.sleep(SleepRequest { millis: 0, payload: vec![1; 64] }).await.unwrap() }
        })
    });
    server.shutdown.cancel();
}

/// Events per second from committed outbox rows to acknowledged Kafka records.
const EVENTS: u64 = 1_000;

fn outbox_relay(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (database, pool, relay, topic) = runtime.block_on(async {
        let database = TestDatabase::create().await.unwrap();
        let config = DatabaseConfig { url: Secret::new(database.url.clone()), ..DatabaseConfig::default() };
        static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");
        let pool = db::connect(&config, "kernel_bench", &MIGRATIONS).await.unwrap();
        let kafka = KafkaConfig {
            bootstrap_servers: codingagent_testkit::kafka_bootstrap(),
            relay_batch_size: 500,
            ..KafkaConfig::default()
        };
        let topic = unique_name("codingagent.bench");
        topics::ensure(&kafka, &[&topic]).await.unwrap();
        let relay = Relay::new(pool.clone(), &kafka, "bench").unwrap();
        (database, pool, relay, topic)
    });
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10).throughput(Throughput::Elements(EVENTS));
    group.bench_function("enqueue_1000_in_one_transaction", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (pool, topic) = (pool.clone(), topic.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    enqueue_batch(&pool, &topic).await;
                    total += started.elapsed();
                }
                total
            }
        })
    });
    group.bench_function("relay_1000_to_kafka", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (pool, topic, relay) = (pool.clone(), topic.clone(), &relay);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    enqueue_batch(&pool, &topic).await;
                    let started = Instant::now();
                    while relay.relay_once().await.unwrap() > 0 {}
                    total += started.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    runtime.block_on(async {
        pool.close().await;
        database.drop_database().await.unwrap();
    });
}

/// Commits `EVENTS` events of about 250 bytes in one transaction.
async fn enqueue_batch(pool: &sqlx::PgPool, topic: &str) {
    let mut tx = pool.begin().await.unwrap();
    for i in 0..EVENTS {
        let event = TaskCreated { task_id: format!("t{i}"), text: "x".repeat(200), ..Default::default() };
        enqueue(&mut tx, topic, &event.task_id, &event).await.unwrap();
    }
    tx.commit().await.unwrap();
}

criterion_group!(benches, identity, frame, statuses, unary_rpc, outbox_relay);
criterion_main!(benches);
