//! gRPC handlers: validate, authorize, delegate, convert.

use crate::cascade::Decision;
use crate::convert::{self, caller_actor, timestamp};
use crate::corpus::split_mark;
use crate::engine::Engine;
use crate::error::{ClassifierError, Result};
use crate::features::FEATURE_VERSION;
use crate::heuristic::{COMPLEXITIES, TASK_TYPES};
use crate::plan::plan;
use crate::retrain::{self, Request as RetrainRequest};
use crate::training::Sample;
use crate::{registry, store};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::identity::{Caller, caller};
use codingagent_kernel::kafka::{OutboxEvent, enqueue, topics};
use codingagent_kernel::{idempotency, pagination, validate};
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::classifier::v1::classifier_service_server::ClassifierService;
use codingagent_proto::codingagent::common::v1::Language;
use codingagent_proto::codingagent::events::v1 as events;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Request text bounds, in characters after trimming.
const MIN_TEXT: usize = 10;
const MAX_TEXT: usize = 10_000;
const MAX_COMMENT: usize = 2_000;
const MAX_REASON: usize = 500;
const MAX_LANGUAGES: usize = 20;
const MAX_PATHS: usize = 200;
const MAX_PATH_CHARS: usize = 1_024;
const MAX_TASK_ID: usize = 128;
const MAX_REPOSITORY_ID: usize = 256;

/// `validate::text`'s violation of `value`, if any, into `violations`: NUL and other control
/// characters are refused in every free-text field (NUL would fail the statement storing it).
fn check_text(field: &str, value: &str, violations: &mut Vec<FieldViolation>) {
    if let Err(violation) = validate::text(field, value) {
        violations.push(violation);
    }
}

/// The `ClassifierService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct Handlers {
    pub engine: Arc<Engine>,
}

fn uuid(field: &str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|_| ClassifierError::invalid(field, "must be an id this service returned"))
}

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

impl Handlers {
    /// The response an earlier call with the same key recorded, looked up without holding a
    /// connection afterwards (the mutation re-checks under the key's lock). Nothing without a
    /// `request_id`, and no transaction is begun for it.
    async fn replayed<M: prost::Message + Default>(
        &self,
        key: &idempotency::Key<'_>,
        request_id: &str,
    ) -> Result<Option<M>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let mut tx = self.engine.pool.begin().await?;
        Ok(key.replay(&mut tx).await?)
    }

    async fn classify(&self, caller: &Caller, request: pb::ClassifyRequest) -> Result<pb::Classification> {
        check_classify(&request)?;
        let owner = caller.require_user()?.to_owned();
        if let Err(retry_after) = self.engine.admit(&owner).await {
            return Err(ClassifierError::RateLimited {
                caller: owner,
                limit: self.engine.config.rate_limit_per_minute,
                retry_after,
            });
        }
        let key = idempotency::Key::new(caller, "Classify", &request.request_id, &request);
        if let Some(done) = self.replayed(&key, &request.request_id).await? {
            return Ok(done);
        }
        // The cascade may wait seconds on the llm service: no connection is held meanwhile.
        let started = Instant::now();
        let decision = self.engine.decide(request.text.trim(), &owner, !request.disable_llm_stage).await;
        let id = Uuid::now_v7();
        let mut classification = classification(id, &owner, &request, &decision);
        classification.duration = Some(convert::duration(started.elapsed()));
        let event = events::ClassificationMade {
            classification_id: classification.id.clone(),
            actor: Some(caller_actor(caller)),
            occur_time: classification.create_time,
            classification: Some(classification.clone()),
        };
        let event = OutboxEvent::new(topics::CLASSIFIER, &classification.id, &event);
        if request.request_id.is_empty() {
            // The hot path: the classification and its event are one statement, one round trip.
            let mut conn = self.engine.pool.acquire().await?;
            store::insert_classification(&mut conn, &classification, id, event).await?;
            return Ok(classification);
        }
        let mut tx = self.engine.pool.begin().await?;
        // A concurrent retry may have stored its answer while this one was deciding.
        if let Some(done) = key.replay::<pb::Classification>(&mut tx).await? {
            return Ok(done);
        }
        store::insert_classification(&mut tx, &classification, id, event).await?;
        key.remember(&mut tx, &classification).await?;
        tx.commit().await?;
        Ok(classification)
    }

    async fn submit_feedback(
        &self,
        caller: &Caller,
        request: pb::SubmitFeedbackRequest,
    ) -> Result<pb::Feedback> {
        let owner = caller.require_user()?.to_owned();
        let mut violations = Vec::new();
        let id = Uuid::parse_str(&request.classification_id).ok();
        if id.is_none() {
            violations.push(FieldViolation::new("classification_id", "must be an id this service returned"));
        }
        let known_type = (1..=TASK_TYPES.len() as i32).contains(&request.corrected_task_type);
        let known_complexity = (1..=COMPLEXITIES.len() as i32).contains(&request.corrected_complexity);
        if request.corrected_task_type != 0 && !known_type {
            violations.push(FieldViolation::new("corrected_task_type", "unknown task type"));
        }
        if request.corrected_complexity != 0 && !known_complexity {
            violations.push(FieldViolation::new("corrected_complexity", "unknown complexity"));
        }
        if request.corrected_task_type == 0 && request.corrected_complexity == 0 {
            violations.push(FieldViolation::new(
                "corrected_task_type",
                "set corrected_task_type, corrected_complexity or both",
            ));
        }
        if request.comment.chars().count() > MAX_COMMENT {
            violations.push(FieldViolation::new("comment", format!("at most {MAX_COMMENT} characters")));
        } else {
            check_text("comment", &request.comment, &mut violations);
        }
        if let Err(violation) = idempotency::validate("request_id", &request.request_id) {
            violations.push(violation);
        }
        let (Some(id), true) = (id, violations.is_empty()) else {
            return Err(ClassifierError::Invalid(violations));
        };

        let key = idempotency::Key::new(caller, "SubmitFeedback", &request.request_id, &request);
        let mut tx = self.engine.pool.begin().await?;
        if let Some(done) = key.replay::<pb::Feedback>(&mut tx).await? {
            return Ok(done);
        }
        let Some(original) = store::classification(&mut tx, id, &owner).await? else {
            return Err(ClassifierError::NotFound { kind: "classification", id: request.classification_id });
        };
        let pick = |corrected: i32, original: i32| if corrected == 0 { original } else { corrected };
        let sample = Sample {
            text: original.text.trim().to_owned(),
            task_type: (pick(request.corrected_task_type, original.task_type) - 1).max(0) as usize,
            complexity: (pick(request.corrected_complexity, original.complexity) - 1).max(0) as usize,
            split: split_mark(&original.id, None),
            weight: 1.0,
        };
        let feedback_id = Uuid::now_v7();
        let new = store::NewFeedback {
            id: feedback_id,
            classification_id: id,
            owner: &owner,
            task_type: request.corrected_task_type,
            complexity: request.corrected_complexity,
            comment: &request.comment,
        };
        let created_at = store::insert_feedback(&mut tx, &new, &sample).await?;
        let feedback = pb::Feedback {
            id: feedback_id.to_string(),
            classification_id: original.id.clone(),
            owner: owner.clone(),
            create_time: Some(timestamp(created_at)),
            corrected_task_type: request.corrected_task_type,
            corrected_complexity: request.corrected_complexity,
            comment: request.comment.clone(),
        };
        let event = events::FeedbackSubmitted {
            classification_id: original.id.clone(),
            actor: Some(caller_actor(caller)),
            occur_time: feedback.create_time,
            feedback: Some(feedback.clone()),
            original_task_type: original.task_type,
            original_complexity: original.complexity,
            original_decided_by: original.decided_by,
            original_model_version: original.model_version.clone(),
            task_id: original.task_id.clone(),
        };
        enqueue(&mut tx, topics::CLASSIFIER, &original.id, &event).await?;
        key.remember(&mut tx, &feedback).await?;
        tx.commit().await?;
        Ok(feedback)
    }

    async fn promote(
        &self,
        caller: &Caller,
        request: pb::PromoteModelRequest,
    ) -> Result<pb::PromoteModelResponse> {
        caller.require_operator()?;
        let id = uuid("model_id", &request.model_id)?;
        check_reason(&request.reason, &request.request_id)?;
        let key = idempotency::Key::new(caller, "PromoteModel", &request.request_id, &request);
        let mut tx = self.engine.pool.begin().await?;
        if let Some(done) = key.replay::<pb::PromoteModelResponse>(&mut tx).await? {
            return Ok(done);
        }
        let Some(model) = registry::get_model(&mut tx, id).await? else {
            return Err(ClassifierError::NotFound { kind: "model", id: request.model_id });
        };
        if model.status == i32::from(registry::SERVING) {
            return Ok(pb::PromoteModelResponse { model: Some(model), previous_model: None });
        }
        if model.status == i32::from(registry::REJECTED) && !request.allow_rejected {
            return Err(ClassifierError::FailedPrecondition(
                "MODEL_REJECTED",
                format!(
                    "model {id} was rejected by evaluation ({}); set allow_rejected to override",
                    model.rejection_reason
                ),
            ));
        }
        let response = self.swap_to(&mut tx, id, caller, &request.reason, false).await?;
        key.remember(&mut tx, &response).await?;
        tx.commit().await?;
        self.engine
            .sync_serving()
            .await
            .map_err(|e| ClassifierError::FailedPrecondition("MODEL_UNLOADABLE", e.to_string()))?;
        Ok(response)
    }

    /// Inside `tx`: checks that `id`'s artifact loads in this build, then makes it serve.
    async fn swap_to(
        &self,
        tx: &mut sqlx::PgConnection,
        id: Uuid,
        caller: &Caller,
        reason: &str,
        rollback: bool,
    ) -> Result<pb::PromoteModelResponse> {
        let artifact = registry::artifact(tx, id).await?.unwrap_or_default();
        if let Err(error) = crate::onnx::ServingModel::load(&artifact) {
            return Err(ClassifierError::FailedPrecondition(
                "MODEL_UNLOADABLE",
                format!("model {id} cannot serve in this build: {error}"),
            ));
        }
        let by = caller_actor(caller);
        let (model, previous) = registry::promote(tx, id, &by).await?;
        if rollback {
            let event = events::ClassifierModelRolledBack {
                model_id: previous.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
                actor: Some(by),
                occur_time: model.promote_time,
                restored_model: Some(model.clone()),
                reason: reason.to_owned(),
            };
            let key = previous.as_ref().map_or(model.id.clone(), |p| p.id.clone());
            enqueue(tx, topics::CLASSIFIER, &key, &event).await?;
        } else {
            registry::promoted_event(tx, &model, previous.as_ref(), &by, false, reason).await?;
        }
        Ok(pb::PromoteModelResponse { model: Some(model), previous_model: previous })
    }

    async fn rollback(
        &self,
        caller: &Caller,
        request: pb::RollbackModelRequest,
    ) -> Result<pb::RollbackModelResponse> {
        caller.require_operator()?;
        let target = if request.target_model_id.is_empty() {
            None
        } else {
            Some(uuid("target_model_id", &request.target_model_id)?)
        };
        check_reason(&request.reason, &request.request_id)?;
        let key = idempotency::Key::new(caller, "RollbackModel", &request.request_id, &request);
        let mut tx = self.engine.pool.begin().await?;
        if let Some(done) = key.replay::<pb::RollbackModelResponse>(&mut tx).await? {
            return Ok(done);
        }
        let Some(current) = registry::serving(&mut tx).await? else {
            return Err(ClassifierError::FailedPrecondition(
                "NO_SERVING_MODEL",
                "no model serves; promote one instead".into(),
            ));
        };
        let current_id = uuid("model_id", &current.id)?;
        let target = match target {
            Some(id) => {
                let Some(model) = registry::get_model(&mut tx, id).await? else {
                    return Err(ClassifierError::NotFound { kind: "model", id: request.target_model_id });
                };
                if model.status != i32::from(registry::RETIRED) || model.promote_time.is_none() {
                    return Err(ClassifierError::FailedPrecondition(
                        "NOT_A_PREVIOUS_MODEL",
                        format!("model {id} never served; only a RETIRED model that served can be restored"),
                    ));
                }
                id
            }
            None => registry::last_retired(&mut tx, current_id).await?.ok_or_else(|| {
                ClassifierError::FailedPrecondition(
                    "NO_PREVIOUS_MODEL",
                    "no earlier model to return to".into(),
                )
            })?,
        };
        let swapped = self.swap_to(&mut tx, target, caller, &request.reason, true).await?;
        let response =
            pb::RollbackModelResponse { model: swapped.model, rolled_back_model: swapped.previous_model };
        key.remember(&mut tx, &response).await?;
        tx.commit().await?;
        self.engine
            .sync_serving()
            .await
            .map_err(|e| ClassifierError::FailedPrecondition("MODEL_UNLOADABLE", e.to_string()))?;
        Ok(response)
    }

    async fn retrain(&self, caller: &Caller, request: pb::RetrainRequest) -> Result<pb::RetrainResponse> {
        caller.require_operator()?;
        let training = &self.engine.config.training;
        let mut violations = Vec::new();
        let snapshot = if request.data_snapshot_id.is_empty() {
            None
        } else {
            let parsed = Uuid::parse_str(&request.data_snapshot_id).ok();
            if parsed.is_none() {
                violations
                    .push(FieldViolation::new("data_snapshot_id", "must be an id this service returned"));
            }
            parsed
        };
        let min_per_class = match request.min_samples_per_class {
            0 => training.min_samples_per_class,
            n if n < 0 || (n as u32) < training.min_samples_floor => {
                violations.push(FieldViolation::new(
                    "min_samples_per_class",
                    format!("must be at least {} (or 0 for the default)", training.min_samples_floor),
                ));
                0
            }
            n => n as u32,
        };
        let holdout_fraction = if request.holdout_fraction == 0.0 { 0.2 } else { request.holdout_fraction };
        if !(holdout_fraction > 0.0 && holdout_fraction <= 0.5) {
            violations.push(FieldViolation::new("holdout_fraction", "must be in (0, 0.5], or 0 for 0.2"));
        }
        if let Err(violation) = idempotency::validate("request_id", &request.request_id) {
            violations.push(violation);
        }
        if !violations.is_empty() {
            return Err(ClassifierError::Invalid(violations));
        }
        let key = idempotency::Key::new(caller, "Retrain", &request.request_id, &request);
        let validated = RetrainRequest {
            snapshot,
            min_per_class: min_per_class as usize,
            holdout_fraction,
            skip_promotion: request.skip_promotion,
        };
        retrain::retrain(&self.engine, caller, &key, validated).await
    }

    async fn stats(&self) -> Result<pb::GetTrainingStatsResponse> {
        let stats = store::stats(&self.engine.pool).await?;
        let last = registry::last_training(&self.engine.pool).await?;
        let since = store::samples_since(&self.engine.pool, last.map(|l| l.1)).await?;
        let count = |counts: &[(i16, i64)], label: i32| {
            counts.iter().find(|(l, _)| i32::from(*l) == label).map_or(0, |(_, n)| *n)
        };
        let minimum = self.engine.config.training.min_samples_per_class;
        let short = |counts: &[(i16, i64)]| counts.iter().any(|(_, n)| *n > 0 && *n < i64::from(minimum));
        Ok(pb::GetTrainingStatsResponse {
            total_samples: stats.total,
            task_type_counts: (1..=TASK_TYPES.len() as i32)
                .map(|t| pb::TaskTypeCount { task_type: t, count: count(&stats.task_types, t) })
                .collect(),
            complexity_counts: (1..=COMPLEXITIES.len() as i32)
                .map(|c| pb::ComplexityCount { complexity: c, count: count(&stats.complexities, c) })
                .collect(),
            source_counts: [store::SEED, store::FEEDBACK, store::OUTCOME]
                .iter()
                .map(|s| pb::SampleSourceCount {
                    source: i32::from(*s),
                    count: count(&stats.sources, i32::from(*s)),
                })
                .collect(),
            samples_since_last_training: since,
            last_training_time: last.map(|l| timestamp(l.1)),
            last_training_job_id: last.map(|l| l.0.to_string()).unwrap_or_default(),
            min_samples_per_class: minimum as i32,
            ready_to_train: stats.total >= i64::from(self.engine.config.training.min_total_samples)
                && !short(&stats.task_types)
                && !short(&stats.complexities),
        })
    }
}

fn check_reason(reason: &str, request_id: &str) -> Result<()> {
    let mut violations = Vec::new();
    if reason.chars().count() > MAX_REASON {
        violations.push(FieldViolation::new("reason", format!("at most {MAX_REASON} characters")));
    } else {
        check_text("reason", reason, &mut violations);
    }
    if let Err(violation) = idempotency::validate("request_id", request_id) {
        violations.push(violation);
    }
    if violations.is_empty() { Ok(()) } else { Err(ClassifierError::Invalid(violations)) }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ModelCursor {
    version: i64,
    statuses: Vec<i32>,
}

#[tonic::async_trait]
impl ClassifierService for Handlers {
    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let caller = caller(&request)?.clone();
        let classification = Handlers::classify(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::ClassifyResponse { classification: Some(classification) }))
    }

    async fn get_classification(
        &self,
        request: Request<pb::GetClassificationRequest>,
    ) -> Result<Response<pb::GetClassificationResponse>, Status> {
        let owner = caller(&request)?.require_user()?.to_owned();
        let request = request.into_inner();
        let id = uuid("classification_id", &request.classification_id)?;
        let mut conn = self.engine.pool.acquire().await.map_err(ClassifierError::from)?;
        let classification = store::classification(&mut conn, id, &owner)
            .await
            .map_err(ClassifierError::from)?
            .ok_or(ClassifierError::NotFound { kind: "classification", id: request.classification_id })?;
        Ok(Response::new(pb::GetClassificationResponse { classification: Some(classification) }))
    }

    async fn submit_feedback(
        &self,
        request: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::SubmitFeedbackResponse>, Status> {
        let caller = caller(&request)?.clone();
        let feedback = Handlers::submit_feedback(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::SubmitFeedbackResponse { feedback: Some(feedback) }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        caller(&request)?;
        let request = request.into_inner();
        let limit = pagination::page_size(request.page_size, 20, 100)?;
        if request.statuses.iter().any(|s| *s == 0 || pb::ModelStatus::try_from(*s).is_err()) {
            return Err(
                ClassifierError::invalid("statuses", "entries must be known, specified statuses").into()
            );
        }
        let cursor: Option<ModelCursor> = pagination::decode(&request.page_token)?;
        if cursor.as_ref().is_some_and(|c| c.statuses != request.statuses) {
            return Err(ClassifierError::invalid("page_token", "was issued for a different filter").into());
        }
        let statuses: Vec<i16> = request.statuses.iter().map(|s| *s as i16).collect();
        let rows = registry::list_models(&self.engine.pool, &statuses, cursor.map(|c| c.version), limit + 1)
            .await
            .map_err(ClassifierError::from)?;
        let (models, next_page_token) = pagination::page(rows, limit, |m| ModelCursor {
            version: m.version,
            statuses: request.statuses.clone(),
        });
        Ok(Response::new(pb::ListModelsResponse { models, next_page_token }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        caller(&request)?;
        let request = request.into_inner();
        let mut conn = self.engine.pool.acquire().await.map_err(ClassifierError::from)?;
        let model = if request.model_id == "serving" {
            registry::serving(&mut conn).await.map_err(ClassifierError::from)?
        } else {
            let id = uuid("model_id", &request.model_id)?;
            registry::get_model(&mut conn, id).await.map_err(ClassifierError::from)?
        };
        let model = model.ok_or(ClassifierError::NotFound { kind: "model", id: request.model_id })?;
        Ok(Response::new(pb::GetModelResponse { model: Some(model) }))
    }

    async fn promote_model(
        &self,
        request: Request<pb::PromoteModelRequest>,
    ) -> Result<Response<pb::PromoteModelResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.promote(&caller, request.into_inner()).await?))
    }

    async fn rollback_model(
        &self,
        request: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::RollbackModelResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.rollback(&caller, request.into_inner()).await?))
    }

    async fn retrain(
        &self,
        request: Request<pb::RetrainRequest>,
    ) -> Result<Response<pb::RetrainResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(Handlers::retrain(self, &caller, request.into_inner()).await?))
    }

    async fn get_training_job(
        &self,
        request: Request<pb::GetTrainingJobRequest>,
    ) -> Result<Response<pb::GetTrainingJobResponse>, Status> {
        caller(&request)?.require_operator()?;
        let request = request.into_inner();
        let id = uuid("training_job_id", &request.training_job_id)?;
        let mut conn = self.engine.pool.acquire().await.map_err(ClassifierError::from)?;
        let job = registry::get_job(&mut conn, id)
            .await
            .map_err(ClassifierError::from)?
            .ok_or(ClassifierError::NotFound { kind: "training_job", id: request.training_job_id })?;
        Ok(Response::new(pb::GetTrainingJobResponse { job: Some(job) }))
    }

    async fn get_training_stats(
        &self,
        request: Request<pb::GetTrainingStatsRequest>,
    ) -> Result<Response<pb::GetTrainingStatsResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(self.stats().await?))
    }
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
