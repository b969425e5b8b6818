//! The model registry's RPCs: listing and reading models, and the operators' hand on which
//! one serves (promote, rollback). Every replica follows the registry (ADR 0007); the replica
//! that made the change swaps at once.

use crate::engine::Engine;
use crate::error::{ClassifierError, Result};
use crate::registry;
use crate::validate::{check_text, uuid};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::kafka::{enqueue, topics};
use codingagent_kernel::{idempotency, pagination};
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::events::v1 as events;
use uuid::Uuid;

const MAX_REASON: usize = 500;

#[derive(serde::Serialize, serde::Deserialize)]
struct ModelCursor {
    version: i64,
    statuses: Vec<i32>,
}

/// ListModels: newest first, optionally filtered by status.
pub(crate) async fn list(engine: &Engine, request: pb::ListModelsRequest) -> Result<pb::ListModelsResponse> {
    let limit = pagination::page_size(request.page_size, 20, 100)?;
    if request.statuses.iter().any(|s| *s == 0 || pb::ModelStatus::try_from(*s).is_err()) {
        return Err(ClassifierError::invalid("statuses", "entries must be known, specified statuses"));
    }
    let cursor: Option<ModelCursor> = pagination::decode(&request.page_token)?;
    if cursor.as_ref().is_some_and(|c| c.statuses != request.statuses) {
        return Err(ClassifierError::invalid("page_token", "was issued for a different filter"));
    }
    let statuses: Vec<i16> = request.statuses.iter().map(|s| *s as i16).collect();
    let rows = registry::list_models(&engine.pool, &statuses, cursor.map(|c| c.version), limit + 1).await?;
    let (models, next_page_token) = pagination::page(rows, limit, |m| ModelCursor {
        version: m.version,
        statuses: request.statuses.clone(),
    });
    Ok(pb::ListModelsResponse { models, next_page_token })
}

/// GetModel: by id, or `serving` for the one that serves.
pub(crate) async fn get(engine: &Engine, request: pb::GetModelRequest) -> Result<pb::ClassifierModel> {
    let mut conn = engine.pool.acquire().await?;
    let model = if request.model_id == "serving" {
        registry::serving(&mut conn).await?
    } else {
        let id = uuid("model_id", &request.model_id)?;
        registry::get_model(&mut conn, id).await?
    };
    model.ok_or(ClassifierError::NotFound { kind: "model", id: request.model_id.clone() })
}

/// PromoteModel (operators): makes a model serve; a REJECTED one only with
/// `allow_rejected`, and only if its artifact loads in this build.
pub(crate) async fn promote(
    engine: &Engine,
    caller: &Caller,
    request: pb::PromoteModelRequest,
) -> Result<pb::PromoteModelResponse> {
    caller.require_operator()?;
    let id = uuid("model_id", &request.model_id)?;
    check_reason(&request.reason, &request.request_id)?;
    let key = idempotency::Key::new(caller, "PromoteModel", &request.request_id, &request);
    let (response, committed) = idempotency::mutate(&engine.pool, &key, async |tx| {
        let Some(model) = registry::get_model(&mut *tx, id).await? else {
            return Err(ClassifierError::NotFound { kind: "model", id: request.model_id.clone() });
        };
        if model.status == i32::from(registry::SERVING) {
            return Ok((pb::PromoteModelResponse { model: Some(model), previous_model: None }, ()));
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
        Ok((swap_to(tx, id, caller, &request.reason, false).await?, ()))
    })
    .await?;
    if committed.is_some() {
        load_serving(engine).await?;
    }
    Ok(response)
}

/// Inside `tx`: checks that `id`'s artifact loads in this build, then makes it serve.
async fn swap_to(
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
    let by = caller.actor();
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

/// RollbackModel (operators): returns to the model that served before (or a named RETIRED
/// one that served).
pub(crate) async fn rollback(
    engine: &Engine,
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
    let (response, committed) = idempotency::mutate(&engine.pool, &key, async |tx| {
        let Some(current) = registry::serving(&mut *tx).await? else {
            return Err(ClassifierError::FailedPrecondition(
                "NO_SERVING_MODEL",
                "no model serves; promote one instead".into(),
            ));
        };
        let current_id = uuid("model_id", &current.id)?;
        let target = match target {
            Some(id) => {
                let Some(model) = registry::get_model(&mut *tx, id).await? else {
                    return Err(ClassifierError::NotFound {
                        kind: "model",
                        id: request.target_model_id.clone(),
                    });
                };
                if model.status != i32::from(registry::RETIRED) || model.promote_time.is_none() {
                    return Err(ClassifierError::FailedPrecondition(
                        "NOT_A_PREVIOUS_MODEL",
                        format!("model {id} never served; only a RETIRED model that served can be restored"),
                    ));
                }
                id
            }
            None => registry::last_retired(&mut *tx, current_id).await?.ok_or_else(|| {
                ClassifierError::FailedPrecondition(
                    "NO_PREVIOUS_MODEL",
                    "no earlier model to return to".into(),
                )
            })?,
        };
        let swapped = swap_to(tx, target, caller, &request.reason, true).await?;
        Ok((
            pb::RollbackModelResponse { model: swapped.model, rolled_back_model: swapped.previous_model },
            (),
        ))
    })
    .await?;
    if committed.is_some() {
        load_serving(engine).await?;
    }
    Ok(response)
}

/// After a promotion or rollback committed: this replica loads the model that now serves
/// (the others follow within `model_poll_ms`).
async fn load_serving(engine: &Engine) -> Result<()> {
    engine
        .sync_serving()
        .await
        .map_err(|e| ClassifierError::FailedPrecondition("MODEL_UNLOADABLE", e.to_string()))
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
