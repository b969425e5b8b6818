//! Classifications: Classify runs the cascade for the caller and stores its answer with a
//! plan; GetClassification shows the caller's own, with the latest correction.

use crate::cascade::Decision;
use crate::convert::{self, timestamp};
use crate::engine::Engine;
use crate::error::{ClassifierError, Result};
use crate::features::FEATURE_VERSION;
use crate::plan::plan;
use crate::store;
use crate::validate::{check_text, uuid};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::idempotency;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::kafka::{OutboxEvent, topics};
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::common::v1::Language;
use codingagent_proto::codingagent::events::v1 as events;
use std::time::Instant;
use uuid::Uuid;

/// Request text bounds, in characters after trimming.
const MIN_TEXT: usize = 10;
const MAX_TEXT: usize = 10_000;
const MAX_LANGUAGES: usize = 20;
const MAX_PATHS: usize = 200;
const MAX_PATH_CHARS: usize = 1_024;
const MAX_TASK_ID: usize = 128;
const MAX_REPOSITORY_ID: usize = 256;

fn check_repository(context: &pb::RepositoryContext, violations: &mut Vec<FieldViolation>) {
    let field = |name: &str| format!("repository_context.{name}");
    if context.languages.len() > MAX_LANGUAGES {
        violations.push(FieldViolation::new(field("languages"), format!("at most {MAX_LANGUAGES} entries")));
    }
    if context.languages.iter().any(|l| *l == Language::Unspecified as i32 || Language::try_from(*l).is_err())
    {
        violations
            .push(FieldViolation::new(field("languages"), "entries must be known, specified languages"));
    }
    if context.file_paths.len() > MAX_PATHS {
        violations.push(FieldViolation::new(field("file_paths"), format!("at most {MAX_PATHS} paths")));
    }
    for (index, path) in context.file_paths.iter().enumerate() {
        let bad = path.is_empty()
            || path.chars().count() > MAX_PATH_CHARS
            || path.starts_with('/')
            || path.split(['/', '\\']).any(|segment| segment == "..");
        let name = field(&format!("file_paths[{index}]"));
        if bad {
            violations.push(FieldViolation::new(
                name,
                format!("must be a relative path of 1 to {MAX_PATH_CHARS} characters without `..`"),
            ));
        } else {
            check_text(&name, path, violations);
        }
    }
    if context.repository_id.chars().count() > MAX_REPOSITORY_ID {
        violations.push(FieldViolation::new(
            field("repository_id"),
            format!("at most {MAX_REPOSITORY_ID} characters"),
        ));
    } else {
        check_text(&field("repository_id"), &context.repository_id, violations);
    }
    if context.size_bytes < 0 {
        violations.push(FieldViolation::new(field("size_bytes"), "must not be negative"));
    }
    if context.file_count < 0 {
        violations.push(FieldViolation::new(field("file_count"), "must not be negative"));
    }
}

fn check_classify(request: &pb::ClassifyRequest) -> Result<()> {
    let mut violations = Vec::new();
    let chars = request.text.trim().chars().count();
    if !(MIN_TEXT..=MAX_TEXT).contains(&chars) {
        violations.push(FieldViolation::new(
            "text",
            format!("must be {MIN_TEXT} to {MAX_TEXT} characters after trimming, not {chars}"),
        ));
    } else {
        check_text("text", &request.text, &mut violations);
    }
    if let Some(context) = &request.repository_context {
        check_repository(context, &mut violations);
    }
    if request.task_id.chars().count() > MAX_TASK_ID {
        violations.push(FieldViolation::new("task_id", format!("at most {MAX_TASK_ID} characters")));
    } else {
        check_text("task_id", &request.task_id, &mut violations);
    }
    if let Err(violation) = idempotency::validate("request_id", &request.request_id) {
        violations.push(violation);
    }
    if violations.is_empty() { Ok(()) } else { Err(ClassifierError::Invalid(violations)) }
}

/// A new classification of `request` from the cascade's `decision`, with its plan.
fn classification(
    id: Uuid,
    owner: &str,
    request: &pb::ClassifyRequest,
    decision: &Decision,
) -> pb::Classification {
    let now = timestamp(chrono::Utc::now());
    let planned = plan(
        decision.guess.task_type,
        decision.guess.complexity,
        f64::from(decision.guess.complexity_confidence),
        request.text.trim().chars().count(),
        request.repository_context.as_ref().map_or(0, |c| c.file_count),
    );
    let mut classification = pb::Classification {
        id: id.to_string(),
        owner: owner.to_owned(),
        create_time: Some(now),
        update_time: Some(now),
        text: request.text.clone(),
        repository_context: request.repository_context.clone(),
        task_id: request.task_id.clone(),
        recommended_strategy: planned.strategy as i32,
        recommended_strategy_confidence: planned.strategy_confidence,
        estimated_tokens: Some(planned.token_usage()),
        estimated_tokens_confidence: planned.tokens_confidence,
        feature_version: FEATURE_VERSION.into(),
        ..Default::default()
    };
    convert::decision(&mut classification, decision);
    classification
}

/// The response an earlier call with the same key recorded, looked up without holding a
/// connection afterwards (the mutation re-checks under the key's lock). Nothing without a
/// `request_id`, and no transaction is begun for it.
async fn replayed<M: prost::Message + Default>(
    engine: &Engine,
    key: &idempotency::Key<'_>,
    request_id: &str,
) -> Result<Option<M>> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let mut tx = engine.pool.begin().await?;
    Ok(key.replay(&mut tx).await?)
}

/// Classify: runs the cascade and stores the classification with its event.
pub(crate) async fn classify(
    engine: &Engine,
    caller: &Caller,
    request: pb::ClassifyRequest,
) -> Result<pb::Classification> {
    check_classify(&request)?;
    let owner = caller.require_user()?.to_owned();
    if let Err(retry_after) = engine.admit(&owner).await {
        return Err(ClassifierError::RateLimited {
            caller: owner,
            limit: engine.config.rate_limit_per_minute,
            retry_after,
        });
    }
    let key = idempotency::Key::new(caller, "Classify", &request.request_id, &request);
    if let Some(done) = replayed(engine, &key, &request.request_id).await? {
        return Ok(done);
    }
    // The cascade may wait seconds on the llm service: no connection is held meanwhile.
    let started = Instant::now();
    let decision = engine.decide(request.text.trim(), &owner, !request.disable_llm_stage).await;
    let id = Uuid::now_v7();
    let mut classification = classification(id, &owner, &request, &decision);
    classification.duration = Some(convert::duration(started.elapsed()));
    let event = events::ClassificationMade {
        classification_id: classification.id.clone(),
        actor: Some(caller.actor()),
        occur_time: classification.create_time,
        classification: Some(classification.clone()),
    };
    let event = OutboxEvent::new(topics::CLASSIFIER, &classification.id, &event);
    if request.request_id.is_empty() {
        // The hot path: the classification and its event are one statement, one round trip.
        let mut conn = engine.pool.acquire().await?;
        store::insert_classification(&mut conn, &classification, id, event).await?;
        return Ok(classification);
    }
    let mut tx = engine.pool.begin().await?;
    // A concurrent retry may have stored its answer while this one was deciding.
    if let Some(done) = key.replay::<pb::Classification>(&mut tx).await? {
        return Ok(done);
    }
    store::insert_classification(&mut tx, &classification, id, event).await?;
    key.remember(&mut tx, &classification).await?;
    tx.commit().await?;
    Ok(classification)
}

/// GetClassification: the caller's own classifications only; another user's is NOT_FOUND,
/// indistinguishable from one that does not exist.
pub(crate) async fn get(
    engine: &Engine,
    caller: &Caller,
    request: pb::GetClassificationRequest,
) -> Result<pb::Classification> {
    let owner = caller.require_user()?;
    let id = uuid("classification_id", &request.classification_id)?;
    let mut conn = engine.pool.acquire().await?;
    store::classification(&mut conn, id, owner)
        .await?
        .ok_or(ClassifierError::NotFound { kind: "classification", id: request.classification_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> pb::ClassifyRequest {
        pb::ClassifyRequest { text: text.into(), ..Default::default() }
    }

    fn fields(result: Result<()>) -> Vec<String> {
        match result {
            Err(ClassifierError::Invalid(violations)) => violations.into_iter().map(|v| v.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_length_is_counted_in_characters_after_trimming() {
        assert!(check_classify(&request("fix the login test")).is_ok());
        assert_eq!(fields(check_classify(&request("   short    "))), ["text"]);
        assert!(check_classify(&request(&"é".repeat(10))).is_ok(), "ten characters, twenty bytes");
        assert!(check_classify(&request(&"a".repeat(10_000))).is_ok());
        assert_eq!(fields(check_classify(&request(&"a".repeat(10_001)))), ["text"]);
    }

    #[test]
    fn every_bad_repository_field_is_named() {
        let mut bad = request("fix the login test");
        bad.repository_context = Some(pb::RepositoryContext {
            languages: vec![0],
            file_paths: vec!["src/ok.rs".into(), "/etc/passwd".into(), "a/../../b".into()],
            size_bytes: -1,
            file_count: -5,
            repository_id: String::new(),
        });
        bad.request_id = "has space".into();
        assert_eq!(
            fields(check_classify(&bad)),
            [
                "repository_context.languages",
                "repository_context.file_paths[1]",
                "repository_context.file_paths[2]",
                "repository_context.size_bytes",
                "repository_context.file_count",
                "request_id",
            ]
        );
    }
}
