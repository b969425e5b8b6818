//! Domain values to contract messages and numbers, shared by the engine (usage records and
//! their events) and the gRPC handlers, so neither depends on the other for them.

use crate::provider::Finish;
use crate::registry::RegisteredModel;
use crate::selection::Reason;
use crate::store::Usage;
use chrono::{DateTime, Utc};
use codingagent_proto::codingagent::common::v1::{Actor, ActorKind, Money, TokenUsage};
use codingagent_proto::codingagent::llm::v1 as pb;
use std::time::Duration;

pub(crate) use codingagent_proto::helpers::{duration, now, timestamp};

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

/// A stored usage row as the contract's record.
pub(crate) fn usage_record(usage: &Usage) -> pb::UsageRecord {
    pb::UsageRecord {
        id: usage.id.to_string(),
        create_time: Some(timestamp(usage.created_at)),
        // Who made the call as the token said (the service, when one called for a user);
        // `user_id` names the user it was for.
        caller: Some(Actor {
            kind: if usage.caller_kind == 1 { ActorKind::User } else { ActorKind::Service } as i32,
            id: usage.caller_id.clone(),
            via: String::new(),
        }),
        user_id: usage.user_id.clone().unwrap_or_default(),
        task_id: usage.task_id.clone().unwrap_or_default(),
        model: usage.model.clone(),
        provider: usage.provider.clone(),
        kind: i32::from(usage.kind),
        outcome: i32::from(usage.outcome),
        usage: Some(TokenUsage { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens }),
        latency: Some(duration(std::time::Duration::from_millis(usage.latency_ms.max(0) as u64))),
        time_to_first_token: usage
            .ttft_ms
            .map(|ms| duration(std::time::Duration::from_millis(ms.max(0) as u64))),
        cost: Some(usd(usage.cost_micros)),
        cache_hit: usage.cache_hit,
        selection_reason: i32::from(usage.selection_reason),
        ab_test_id: usage.ab_test_id.map(|id| id.to_string()).unwrap_or_default(),
        ab_variant_id: usage.ab_variant_id.clone().unwrap_or_default(),
        finish_reason: i32::from(usage.finish_reason),
    }
}

/// A selection reason as the contract names it.
pub(crate) fn reason(reason: Reason) -> pb::SelectionReason {
    match reason {
        Reason::Explicit => pb::SelectionReason::Explicit,
        Reason::AbTest => pb::SelectionReason::AbTest,
        Reason::Learned => pb::SelectionReason::Learned,
        Reason::Default => pb::SelectionReason::HardwareDefault,
        Reason::Fallback => pb::SelectionReason::Fallback,
    }
}

/// Finish reasons and selection reasons as the contract numbers them (stored and cached so).
pub(crate) fn finish_to_i32(finish: Finish) -> i32 {
    match finish {
        Finish::Stop => 1,
        Finish::Length => 2,
        Finish::ContentFilter => 3,
    }
}

pub(crate) fn finish_from_i32(value: i32) -> Finish {
    match value {
        2 => Finish::Length,
        3 => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

pub(crate) fn reason_to_i16(reason: Reason) -> i16 {
    match reason {
        Reason::Explicit => 1,
        Reason::AbTest => 2,
        Reason::Learned => 3,
        Reason::Default => 4,
        Reason::Fallback => 5,
    }
}
