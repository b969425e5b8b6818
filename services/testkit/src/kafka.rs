//! Reading a topic the way an outside consumer would, to check what was really published.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One record as it sits in Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived or
/// `timeout` passed, and returns what it saw (so a test can also assert that nothing more
/// came). Runs on a blocking thread so the code under test keeps running meanwhile.
pub async fn read_topic(topic: &str, expected: usize, timeout: Duration) -> anyhow::Result<Vec<Record>> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&topic, expected, timeout)).await?
}

fn read_topic_blocking(topic: &str, expected: usize, timeout: Duration) -> anyhow::Result<Vec<Record>> {
    let consumer = assigned_consumer(topic)?;
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < expected && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        records.push(record(&message?));
    }
    Ok(records)
}

/// A consumer outside any group, positioned at the start of every partition of `topic`.
fn assigned_consumer(topic: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", crate::kafka_bootstrap())
        .set("group.id", crate::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|header| {
                    Some((header.key.to_owned(), String::from_utf8(header.value?.to_vec()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}

/// Reads `topic` from the beginning until a record matches `wanted` or `timeout` passes. For
/// topics other tests write to as well.
pub async fn find_record(
    topic: &str,
    wanted: impl Fn(&Record) -> bool + Send + 'static,
    timeout: Duration,
) -> anyhow::Result<Option<Record>> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        let consumer = assigned_consumer(&topic)?;
        while Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
            let record = record(&message?);
            if wanted(&record) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    })
    .await?
}

/// Publishes one event the way a CodingAgent service's outbox relay would (CloudEvents
/// binary mode), for tests that play the part of another service.
pub async fn publish_event(topic: &str, key: &str, event_type: &str, payload: Vec<u8>) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", crate::kafka_bootstrap()).create()?;
    let id = uuid::Uuid::new_v4().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_type", value: Some(event_type) })
        .insert(Header { key: "ce_source", value: Some("/codingagent/test") })
        .insert(Header { key: "content-type", value: Some("application/protobuf") });
    producer
        .send(FutureRecord::to(topic).key(key).payload(&payload).headers(headers), Duration::from_secs(10))
        .await
        .map_err(|(error, _)| error)?;
    Ok(())
}

/// Deletes a topic a test created, so runs against a long-lived broker do not pile up
/// partitions (each holds preallocated index files and slows the broker's start).
pub async fn delete_topic(topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", crate::kafka_bootstrap()).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&[topic], &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot delete topic {topic}: {code}"))?;
    }
    Ok(())
}
