//! CloudEvents 1.0 binary content mode for Kafka: event attributes travel as `ce_*` headers
//! and the protobuf payload is the record value, so any Kafka tool can route and inspect
//! events without decoding them.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use std::collections::HashMap;

pub const SPEC_VERSION: &str = "ce_specversion";
pub const ID: &str = "ce_id";
pub const TYPE: &str = "ce_type";
pub const SOURCE: &str = "ce_source";
pub const TIME: &str = "ce_time";
pub const CONTENT_TYPE: &str = "content-type";
pub const PROTOBUF: &str = "application/protobuf";

/// The attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub id: String,
    /// The fully qualified protobuf message name, e.g. `codingagent.events.v1.TaskCreated`.
    pub event_type: String,
    /// The producing service, e.g. `/codingagent/orchestration`.
    pub source: String,
    /// RFC 3339 time the event was recorded.
    pub time: String,
}

/// Builds the headers of a record: the CloudEvents attributes plus trace context fields.
pub fn headers(attributes: &Attributes, trace: &HashMap<String, String>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        (SPEC_VERSION, "1.0"),
        (ID, attributes.id.as_str()),
        (TYPE, attributes.event_type.as_str()),
        (SOURCE, attributes.source.as_str()),
        (TIME, attributes.time.as_str()),
        (CONTENT_TYPE, PROTOBUF),
    ] {
        headers = headers.insert(Header { key, value: Some(value) });
    }
    let mut trace: Vec<_> = trace.iter().collect();
    trace.sort();
    for (key, value) in trace {
        headers = headers.insert(Header { key: key.as_str(), value: Some(value.as_str()) });
    }
    headers
}

/// Every header with a UTF-8 value, by name; later duplicates win.
pub fn read(headers: Option<&impl Headers>) -> HashMap<String, String> {
    headers
        .map(|h| {
            h.iter()
                .filter_map(|header| {
                    Some((header.key.to_owned(), String::from_utf8(header.value?.to_vec()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_kafka_headers() {
        let attributes = Attributes {
            id: "0191d7a4-0000-7000-8000-000000000001".into(),
            event_type: "codingagent.events.v1.TaskCreated".into(),
            source: "/codingagent/orchestration".into(),
            time: "2026-11-26T10:00:00Z".into(),
        };
        let trace = HashMap::from([("traceparent".to_owned(), "00-abc-def-01".to_owned())]);
        let read = read(Some(&headers(&attributes, &trace)));
        assert_eq!(read[ID], attributes.id);
        assert_eq!(read[TYPE], attributes.event_type);
        assert_eq!(read[SOURCE], attributes.source);
        assert_eq!(read[TIME], attributes.time);
        assert_eq!(read[SPEC_VERSION], "1.0");
        assert_eq!(read[CONTENT_TYPE], PROTOBUF);
        assert_eq!(read["traceparent"], "00-abc-def-01");
    }
}
