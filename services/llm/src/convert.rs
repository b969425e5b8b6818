//! Domain values to contract messages.

use crate::registry::RegisteredModel;
use chrono::{DateTime, Utc};
use codingagent_proto::codingagent::common::v1::Money;
use codingagent_proto::codingagent::llm::v1 as pb;
use std::time::Duration;

pub(crate) fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

pub(crate) fn now() -> prost_types::Timestamp {
    timestamp(Utc::now())
}

pub(crate) fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: value.as_secs() as i64, nanos: value.subsec_nanos() as i32 }
}

pub(crate) fn from_duration(value: &prost_types::Duration) -> Duration {
    Duration::from_secs(value.seconds.max(0) as u64) + Duration::from_nanos(value.nanos.max(0) as u64)
}

pub(crate) fn from_timestamp(value: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(value.seconds, value.nanos.max(0) as u32)
}

pub(crate) fn usd(micros: i64) -> Money {
    Money { currency_code: "USD".into(), micros }
}

pub(crate) fn model(model: &RegisteredModel) -> pb::Model {
    let mut capabilities =
        vec![if model.info.embedding { pb::ModelCapability::Embedding } else { pb::ModelCapability::Chat }
            as i32];
    capabilities.sort_unstable();
    pb::Model {
        id: model.id.clone(),
        provider: model.provider.clone(),
        provider_kind: if model.ollama {
            pb::ProviderKind::Ollama
        } else {
            pb::ProviderKind::OpenaiCompatible
        } as i32,
        name: model.info.name.clone(),
        family: model.info.family.clone(),
        parameter_count: model.info.parameter_count,
        quantization: model.info.quantization.clone(),
        size_bytes: model.info.size_bytes,
        context_length: model.info.context_length,
        capabilities,
        state: pb::ModelState::Available as i32,
        loaded: model.info.loaded,
        input_price_per_million: None,
        output_price_per_million: None,
        digest: model.info.digest.clone(),
        create_time: None,
        update_time: None,
        sync_time: Some(timestamp(model.synced_at)),
    }
}
