//! Training jobs' RPCs: Retrain (the job itself is in `retrain.rs`), GetTrainingJob, and
//! GetTrainingStats about the samples a run would train on.

use crate::convert::timestamp;
use crate::engine::Engine;
use crate::error::{ClassifierError, Result};
use crate::heuristic::{COMPLEXITIES, TASK_TYPES};
use crate::retrain::{self, Request as RetrainRequest};
use crate::validate::uuid;
use crate::{registry, store};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::idempotency;
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::classifier::v1 as pb;
use uuid::Uuid;

/// Retrain (operators): validates the request and runs the job (`retrain.rs`).
pub(crate) async fn retrain(
    engine: &Engine,
    caller: &Caller,
    request: pb::RetrainRequest,
) -> Result<pb::RetrainResponse> {
    caller.require_operator()?;
    let training = &engine.config.training;
    let mut violations = Vec::new();
    let snapshot = if request.data_snapshot_id.is_empty() {
        None
    } else {
        let parsed = Uuid::parse_str(&request.data_snapshot_id).ok();
        if parsed.is_none() {
            violations.push(FieldViolation::new("data_snapshot_id", "must be an id this service returned"));
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
    retrain::retrain(engine, caller, &key, validated).await
}

/// GetTrainingJob (operators).
pub(crate) async fn get(
    engine: &Engine,
    caller: &Caller,
    request: pb::GetTrainingJobRequest,
) -> Result<pb::TrainingJob> {
    caller.require_operator()?;
    let id = uuid("training_job_id", &request.training_job_id)?;
    let mut conn = engine.pool.acquire().await?;
    registry::get_job(&mut conn, id)
        .await?
        .ok_or(ClassifierError::NotFound { kind: "training_job", id: request.training_job_id })
}

/// GetTrainingStats: what the current samples hold and whether a run could start.
pub(crate) async fn stats(engine: &Engine) -> Result<pb::GetTrainingStatsResponse> {
    let stats = store::stats(&engine.pool).await?;
    let last = registry::last_training(&engine.pool).await?;
    let since = store::samples_since(&engine.pool, last.map(|l| l.1)).await?;
    let count = |counts: &[(i16, i64)], label: i32| {
        counts.iter().find(|(l, _)| i32::from(*l) == label).map_or(0, |(_, n)| *n)
    };
    let minimum = engine.config.training.min_samples_per_class;
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
        ready_to_train: stats.total >= i64::from(engine.config.training.min_total_samples)
            && !short(&stats.task_types)
            && !short(&stats.complexities),
    })
}
