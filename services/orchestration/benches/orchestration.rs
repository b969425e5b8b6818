//! The orchestration service's performance goals, measured through its real `serve()` on
//! loopback against the real PostgreSQL (issue 10): log lines per second into one stream,
//! live-tail latency, memory of 1,000 open log streams, CreateTask latency, and how soon a
//! run continues after its worker dies. Run with
//! `cargo bench -p codingagent-orchestration --bench orchestration` (infrastructure from
//! `./dev up`); results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/orchestration/double.rs"]
#[allow(dead_code)]
mod double;
#[path = "../tests/orchestration/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
#[path = "../tests/orchestration/harness.rs"]
#[allow(dead_code)]
mod harness;

use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use harness::{Platform, create, task_request, wait_for};
use pb::stream_task_logs_response::Item;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.2?} p95={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse().unwrap()))
        .unwrap()
}

/// Appends `count` lines to the task's log in one transaction, as the run log writer does.
async fn append(pool: &sqlx::PgPool, task: &str, count: i64, message: &str) {
    let mut tx = pool.begin().await.unwrap();
    let last: i64 = sqlx::query_scalar(
        "UPDATE orchestration.tasks SET last_log_seq = last_log_seq + $2 WHERE id = $1::uuid RETURNING last_log_seq",
    )
    .bind(task)
    .bind(count)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO orchestration.log_lines (task_id, seq, level, source, message) \
         SELECT $1::uuid, s, 2, 3, $4 || s FROM generate_series($2::bigint, $3::bigint) s",
    )
    .bind(task)
    .bind(last - count + 1)
    .bind(last)
    .bind(message)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('orchestration_logs', $1)").bind(task).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

async fn database_pool(platform: &Platform) -> sqlx::PgPool {
    sqlx::PgPool::connect(platform.orchestration.config.database.url.expose()).await.unwrap()
}

/// Lines per second through one StreamTaskLogs: the replay of a long log, then a live run
/// appending 1,000-line batches as fast as PostgreSQL takes them.
async fn throughput(platform: &Platform) {
    let mut client = platform.orchestration.user("bench").await;
    let pool = database_pool(platform).await;
    let task =
        create(&mut client, task_request(&fixtures::paging(), "Throughput", Strategy::SingleShot)).await;
    wait_for(&mut client, &task.id, &[pb::TaskState::Queued], Duration::from_secs(10)).await;
    let total = 200_000i64;
    for _ in 0..(total / 10_000) {
        append(&pool, &task.id, 10_000, "test output line ").await;
    }
    let request =
        pb::StreamTaskLogsRequest { task_id: task.id.clone(), replay_only: true, ..Default::default() };
    let started = Instant::now();
    let mut stream = client.stream_task_logs(request).await.unwrap().into_inner();
    let mut lines = 0;
    while let Some(item) = stream.message().await.unwrap() {
        if matches!(item.item, Some(Item::Line(_))) {
            lines += 1;
        }
    }
    let elapsed = started.elapsed();
    println!("replay: {lines} lines in {elapsed:.2?} = {:.0} lines/s", lines as f64 / elapsed.as_secs_f64());

    // Live: the stream follows while a writer appends; measured until the stream has all.
    let after = total;
    let request =
        pb::StreamTaskLogsRequest { task_id: task.id.clone(), after_seq: after, ..Default::default() };
    let mut stream = client.stream_task_logs(request).await.unwrap().into_inner();
    let writer_pool = pool.clone();
    let task_id = task.id.clone();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            append(&writer_pool, &task_id, 1_000, "live line ").await;
        }
    });
    let mut received = 0;
    while received < 100_000 {
        if let Some(Item::Line(_)) = stream.message().await.unwrap().unwrap().item {
            received += 1;
        }
    }
    let elapsed = started.elapsed();
    writer.await.unwrap();
    println!(
        "live: {received} lines in {elapsed:.2?} = {:.0} lines/s",
        received as f64 / elapsed.as_secs_f64()
    );
}

/// Time from a line's commit to its arrival on an open stream on another replica.
async fn tail_latency(platform: &Platform) {
    let replica = platform.orchestration.replica(|c| c.worker.concurrency = 0).await;
    let mut client = replica.user("bench").await;
    let mut owner = platform.orchestration.user("bench").await;
    let pool = database_pool(platform).await;
    let task = create(&mut owner, task_request(&fixtures::paging(), "Latency", Strategy::SingleShot)).await;
    wait_for(&mut owner, &task.id, &[pb::TaskState::Queued], Duration::from_secs(10)).await;
    let mut stream = client
        .stream_task_logs(pb::StreamTaskLogsRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    // Skip the replay.
    loop {
        if let Some(Item::ReplayComplete(_)) = stream.message().await.unwrap().unwrap().item {
            break;
        }
    }
    let mut samples = Vec::new();
    for _ in 0..1_000 {
        let sent = Instant::now();
        append(&pool, &task.id, 1, "tick ").await;
        loop {
            if let Some(Item::Line(_)) = stream.message().await.unwrap().unwrap().item {
                break;
            }
        }
        samples.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report("live tail (append → delivered, other replica)", samples);
    replica.stop().await;
}

/// Memory of 1,000 log streams open on one instance, all following live lines.
async fn many_streams(platform: &Platform) {
    let replica = platform
        .orchestration
        .replica(|c| {
            c.worker.concurrency = 0;
            c.server.max_streams_per_caller = 2_000;
            c.server.max_streams_per_connection = 2_000;
        })
        .await;
    let pool = database_pool(platform).await;
    let mut owner = platform.orchestration.user("streams").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let task = create(
            &mut owner,
            task_request(&fixtures::paging(), &format!("Streams {i}"), Strategy::SingleShot),
        )
        .await;
        tasks.push(task.id);
    }
    let before = rss_kib();
    let mut streams = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(replica.user("streams").await);
    }
    for i in 0..1_000 {
        let client = &mut clients[i % 10];
        let request = pb::StreamTaskLogsRequest { task_id: tasks[i % 10].clone(), ..Default::default() };
        streams.push(client.stream_task_logs(request).await.unwrap().into_inner());
    }
    for task in &tasks {
        append(&pool, task, 10, "broadcast ").await;
    }
    let started = Instant::now();
    for stream in &mut streams {
        let mut lines = 0;
        while lines < 10 {
            if let Some(Item::Line(_)) = stream.message().await.unwrap().unwrap().item {
                lines += 1;
            }
        }
    }
    let after = rss_kib();
    println!(
        "1,000 streams: RSS {before} KiB → {after} KiB (+{} KiB, {:.1} KiB per stream, client side included); \
         10 lines each delivered in {:.2?}",
        after - before,
        (after - before) as f64 / 1_000.0,
        started.elapsed()
    );
    drop(streams);
    replica.stop().await;
}

/// CreateTask round trips (the classifier is called after the response, not measured here).
async fn create_latency(platform: &Platform) {
    let mut client = platform.orchestration.user("creator").await;
    let repo = fixtures::paging();
    let mut samples = Vec::new();
    for i in 0..1_000 {
        let request = task_request(&repo, &format!("Fix paginate() #{i}"), Strategy::SingleShot);
        let started = Instant::now();
        client.create_task(request).await.unwrap();
        samples.push(started.elapsed());
    }
    report("CreateTask", samples);
}

/// A worker dies mid-run; how soon does another continue it?
async fn resume(platform: &Platform) {
    let doomed = platform.orchestration.doomed_replica(|c| c.worker.concurrency = 1).await;
    platform.model.answer(double::Role::Coder, fixtures::PAGING_FIX);
    let mut client = platform.orchestration.user("resume").await;
    let mut request = task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot);
    request.test_command = "sleep 3; python3 -m unittest discover -s tests -t .".into();
    let task = create(&mut client, request).await;
    wait_for(&mut client, &task.id, &[pb::TaskState::Validating], Duration::from_secs(30)).await;
    let rescuer = platform.orchestration.replica(|c| c.worker.concurrency = 1).await;
    let crashed = chrono::Utc::now();
    doomed.crash();
    wait_for(&mut client, &task.id, &[pb::TaskState::Succeeded], Duration::from_secs(60)).await;
    let lines = harness::lines(&mut client, &task.id, 0).await;
    let resumed = lines.iter().find(|l| l.message.starts_with("run resumed")).unwrap();
    let at = codingagent_proto::helpers::to_chrono(resumed.time.as_ref().unwrap()).unwrap();
    println!(
        "resume: continued {:.2?} after the crash (lease {} s)",
        (at - crashed).to_std().unwrap(),
        platform.orchestration.config.worker.lease_secs
    );
    rescuer.stop().await;
}

#[tokio::main]
async fn main() {
    let platform = Platform::start(|c| {
        c.worker.concurrency = 0;
        c.quotas.executions_per_hour = 0;
    })
    .await;
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    // First, while no other runs wait: the doomed worker must claim the measured run.
    if wants("resume") {
        resume(&platform).await;
    }
    if wants("throughput") {
        throughput(&platform).await;
    }
    if wants("latency") {
        tail_latency(&platform).await;
    }
    if wants("streams") {
        many_streams(&platform).await;
    }
    if wants("create") {
        create_latency(&platform).await;
    }
    platform.stop().await;
}
