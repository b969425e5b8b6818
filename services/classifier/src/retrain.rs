//! Training jobs against the database — snapshot, fit, evaluate against the serving model on
//! the same held-out samples, register, promote when no worse — and the first start's
//! bootstrap from the shipped corpus and model.

use crate::convert::metrics;
use crate::engine::Engine;
use crate::error::{ClassifierError, Result};
use crate::features::{FEATURE_VERSION, extract};
use crate::linear::Training;
use crate::onnx::{ServingModel, write};
use crate::registry::{self, JobEnd, NewModel};
use crate::training::{self, Evaluation, Sample};
use crate::{corpus, store};
use codingagent_kernel::idempotency;
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::common::v1::Actor;
use uuid::Uuid;

/// The model shipped with CodingAgent, trained from the seed corpus by `codingagent
/// classifier train` (see MODEL.md). Its version is its id.
pub const SHIPPED_MODEL: &[u8] = include_bytes!("../model/seed.onnx");

/// A Retrain request, validated.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub snapshot: Option<Uuid>,
    pub min_per_class: usize,
    pub holdout_fraction: f64,
    pub skip_promotion: bool,
}

fn service_actor() -> Actor {
    Actor::service("classifier")
}

/// Evaluates `model` on `held_out`.
fn evaluate_model(model: &ServingModel, held_out: &[&Sample]) -> std::result::Result<Evaluation, String> {
    training::evaluate(held_out, |text| model.probabilities(&extract(text)).map_err(|e| e.to_string()))
}

/// The model a candidate is compared with, and the verdict: `Err` says why the candidate may
/// not serve. Only when nothing serves is there nothing to be worse than; a serving model that
/// cannot be evaluated leaves the candidate unproven, so it is rejected rather than promoted
/// blind.
fn judge(
    candidate: &Evaluation,
    serving: Option<(String, std::result::Result<Evaluation, String>)>,
    tolerance: f64,
) -> (Option<(Uuid, Evaluation)>, std::result::Result<(), String>) {
    let Some((version, evaluated)) = serving else { return (None, Ok(())) };
    let Ok(id) = Uuid::parse_str(&version) else {
        return (
            None,
            Err(format!("the serving model's version {version:?} is not a model id to compare with")),
        );
    };
    match evaluated {
        Ok(evaluation) => {
            let verdict = training::no_worse(candidate, &evaluation, tolerance);
            (Some((id, evaluation)), verdict)
        }
        Err(error) => (
            None,
            Err(format!("the serving model {id} could not be evaluated on the held-out samples: {error}")),
        ),
    }
}

/// The job a retried Retrain started, as it stands now (running or finished), with its
/// candidate once there is one.
async fn current(engine: &Engine, started: pb::RetrainResponse) -> Result<pb::RetrainResponse> {
    let Some(job) = started.job.as_ref().and_then(|j| Uuid::parse_str(&j.id).ok()) else {
        return Ok(started);
    };
    let mut conn = engine.pool.acquire().await?;
    let Some(job) = registry::get_job(&mut conn, job).await? else { return Ok(started) };
    let candidate = match Uuid::parse_str(&job.candidate_model_id) {
        Ok(id) => registry::get_model(&mut conn, id).await?,
        Err(_) => None,
    };
    Ok(pb::RetrainResponse { job: Some(job), candidate })
}

/// Runs one training job to its end. The idempotency `key` is recorded with the job row, in
/// the transaction that starts the job, so a retry — while the job runs, after it ended, or
/// after this process died mid-job — gets that job back instead of training again.
pub(crate) async fn retrain(
    engine: &Engine,
    caller: &Caller,
    key: &idempotency::Key<'_>,
    request: Request,
) -> Result<pb::RetrainResponse> {
    let by = caller.actor();
    let job_id = Uuid::now_v7();
    let mut tx = engine.pool.begin().await?;
    if let Some(started) = key.replay::<pb::RetrainResponse>(&mut tx).await? {
        drop(tx);
        return current(engine, started).await;
    }
    if !registry::create_job(&mut tx, job_id, &by).await? {
        let active = registry::active_job(&mut tx).await?.map(|j| j.to_string()).unwrap_or_default();
        return Err(ClassifierError::TrainingInProgress(active));
    }
    let job = registry::get_job(&mut tx, job_id).await?;
    key.remember(&mut tx, &pb::RetrainResponse { job, candidate: None }).await?;
    tx.commit().await?;

    let outcome = run_job(engine, job_id, &by, &request).await;
    let mut conn = engine.pool.acquire().await?;
    match outcome {
        Ok((model, promoted)) => {
            if promoted && let Err(error) = engine.sync_serving().await {
                tracing::error!(%error, "the promoted model does not load here; the previous one keeps serving");
            }
            let job = registry::get_job(&mut conn, job_id).await?;
            Ok(pb::RetrainResponse { job, candidate: Some(model) })
        }
        Err((snapshot, error)) => {
            let failure = match &error {
                ClassifierError::NotEnoughSamples(short) => format!(
                    "not enough samples: {}",
                    short.iter().map(|(s, d)| format!("{s} {d}")).collect::<Vec<_>>().join(", ")
                ),
                other => other.to_string(),
            };
            let end = JobEnd { snapshot, candidate: None, promoted: false, failure: &failure };
            registry::finish_job(&mut conn, job_id, &end).await?;
            Err(error)
        }
    }
}

type JobError = (Option<(Uuid, i64)>, ClassifierError);

async fn run_job(
    engine: &Engine,
    job_id: Uuid,
    by: &Actor,
    request: &Request,
) -> std::result::Result<(pb::ClassifierModel, bool), JobError> {
    let fail = |snapshot| move |e: sqlx::Error| (snapshot, ClassifierError::from(e));
    let snapshot = match request.snapshot {
        Some(id) => {
            if !store::snapshot_exists(&engine.pool, id).await.map_err(fail(None))? {
                return Err((None, ClassifierError::NotFound { kind: "snapshot", id: id.to_string() }));
            }
            id
        }
        None => {
            let mut conn = engine.pool.acquire().await.map_err(fail(None))?;
            let cap = engine.config.training.feedback_per_user;
            store::create_snapshot(&mut conn, cap).await.map_err(fail(None))?.0
        }
    };
    let (mut samples, owners) = store::snapshot_samples(&engine.pool, snapshot).await.map_err(fail(None))?;
    training::bound_shares(&mut samples, &owners, engine.config.training.feedback_user_share);
    let snapshot = Some((snapshot, samples.len() as i64));
    let minimum_total = engine.config.training.min_total_samples as usize;
    let mut short: Vec<(String, String)> = training::shortfalls(&samples, request.min_per_class)
        .into_iter()
        .map(|(head, label, count)| {
            let label = match head {
                "task_type" => format!("task_type/TASK_TYPE_{}", label.to_uppercase()),
                _ => format!("complexity/COMPLEXITY_{}", label.to_uppercase()),
            };
            (label, format!("{count} of {} samples", request.min_per_class))
        })
        .collect();
    if samples.len() < minimum_total {
        short.push(("total".into(), format!("{} of {minimum_total} samples", samples.len())));
    }
    if !short.is_empty() {
        return Err((snapshot, ClassifierError::NotEnoughSamples(short)));
    }

    let settings = Training { epochs: engine.config.training.epochs, ..Training::default() };
    let holdout = request.holdout_fraction;
    let model_id = Uuid::now_v7();
    let serving = engine.slot.get();
    let computed = tokio::task::spawn_blocking(move || {
        let run = training::run(&samples, holdout, settings, &mut |_| {});
        let (_, held_out) = training::split(&samples, holdout);
        let baseline = serving.map(|model| (model.version.clone(), evaluate_model(&model, &held_out)));
        (run, baseline)
    })
    .await
    .map_err(|e| (snapshot, ClassifierError::FailedPrecondition("TRAINING_FAILED", e.to_string())))?;
    let (run, baseline) = computed;
    let artifact = write(&run.heads, &model_id.to_string());

    let (baseline, verdict) = judge(&run.candidate, baseline, engine.config.training.promotion_tolerance);
    let promote = verdict.is_ok() && !request.skip_promotion;
    let new = NewModel {
        id: model_id,
        // A promoted model is inserted as a candidate and then promoted, which retires the
        // serving one in the same transaction.
        status: if verdict.is_err() { registry::REJECTED } else { registry::CANDIDATE },
        feature_version: FEATURE_VERSION.into(),
        training_sample_count: run.training_count as i64,
        snapshot_id: snapshot.map(|s| s.0),
        training_job_id: Some(job_id),
        artifact,
        metrics: metrics(&run.candidate),
        baseline: baseline.as_ref().map(|(id, evaluation)| (*id, metrics(evaluation))),
        rejection_reason: verdict.clone().err().unwrap_or_default(),
    };
    let store_all = async {
        let mut tx = engine.pool.begin().await?;
        let mut model = registry::insert_model(&mut tx, &new).await?;
        let end = JobEnd { snapshot, candidate: Some(model_id), promoted: promote, failure: "" };
        registry::finish_job(&mut tx, job_id, &end).await?;
        // Trained first, then (if so) promoted: the contract's event order.
        let job = registry::get_job(&mut tx, job_id).await?.unwrap_or_default();
        registry::trained_event(&mut tx, &model, &job, by).await?;
        if promote {
            let (promoted, previous) = registry::promote(&mut tx, model_id, &service_actor()).await?;
            registry::promoted_event(&mut tx, &promoted, previous.as_ref(), &service_actor(), true, "")
                .await?;
            model = promoted;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(model)
    };
    let model = store_all.await.map_err(fail(snapshot))?;
    Ok((model, promote))
}

/// On the first start against an empty database: loads the seed corpus as samples and
/// registers the shipped model as the serving one, so a fresh install classifies with a
/// real model at once. Replicas starting together bootstrap once (advisory lock).
pub(crate) async fn bootstrap(engine: &Engine) -> anyhow::Result<()> {
    let mut tx = engine.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('codingagent-classifier-bootstrap'))")
        .execute(&mut *tx)
        .await?;
    let models: i64 = sqlx::query_scalar("SELECT count(*) FROM models").fetch_one(&mut *tx).await?;
    if models > 0 {
        return Ok(());
    }
    let rows = corpus::read(corpus::SEED)?;
    let model = ServingModel::load(SHIPPED_MODEL)?;
    let id = Uuid::parse_str(&model.version)?;
    let (rows, metrics, training_count) = tokio::task::spawn_blocking(move || {
        let samples: Vec<Sample> = rows.iter().map(corpus::Row::sample).collect();
        let (training, held_out) = training::split(&samples, corpus::SEED_HOLDOUT);
        let metrics = evaluate_model(&model, &held_out).map(|e| metrics(&e));
        (rows, metrics, training.len())
    })
    .await?;
    let metrics = metrics.map_err(anyhow::Error::msg)?;
    let added = store::seed_samples(&engine.pool, &rows).await?;
    let new = NewModel {
        id,
        status: registry::CANDIDATE,
        feature_version: FEATURE_VERSION.into(),
        training_sample_count: training_count as i64,
        snapshot_id: None,
        training_job_id: None,
        artifact: SHIPPED_MODEL.to_vec(),
        metrics,
        baseline: None,
        rejection_reason: String::new(),
    };
    let model = registry::insert_model(&mut tx, &new).await?;
    let (promoted, _) = registry::promote(&mut tx, id, &service_actor()).await?;
    registry::promoted_event(&mut tx, &promoted, None, &service_actor(), true, "shipped model").await?;
    tx.commit().await?;
    tracing::info!(samples = added, model = %model.id, "bootstrapped the seed corpus and the shipped model");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::Probabilities;

    fn evaluation() -> Evaluation {
        let sample = Sample {
            text: "fix the login test".into(),
            task_type: 0,
            complexity: 0,
            split: 0.1,
            weight: 1.0,
        };
        let always_first = |_: &str| {
            let first = |n: usize| (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
            Ok::<_, String>(Probabilities { task_type: first(9), complexity: first(3) })
        };
        training::evaluate(&[&sample], always_first).unwrap()
    }

    #[test]
    fn a_serving_model_that_cannot_be_evaluated_rejects_the_candidate() {
        let candidate = evaluation();
        let serving = Uuid::now_v7().to_string();
        let (baseline, verdict) =
            judge(&candidate, Some((serving.clone(), Err("tract failed".into()))), 1e-9);
        assert!(baseline.is_none());
        let reason = verdict.unwrap_err();
        assert!(reason.contains("could not be evaluated") && reason.contains("tract failed"), "{reason}");

        let (baseline, verdict) = judge(&candidate, Some(("v1".into(), Ok(candidate.clone()))), 1e-9);
        assert!(baseline.is_none() && verdict.is_err(), "a serving version that is no id proves nothing");
        assert_eq!(judge(&candidate, None, 1e-9), (None, Ok(())), "nothing serves: nothing to be worse than");
        let (baseline, verdict) = judge(&candidate, Some((serving.clone(), Ok(candidate.clone()))), 1e-9);
        assert_eq!((baseline.map(|b| b.0.to_string()), verdict), (Some(serving), Ok(())));
    }
}
