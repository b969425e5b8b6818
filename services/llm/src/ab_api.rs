//! A/B test RPCs: operators run experiments between models; services (orchestration)
//! report outcomes; results carry intervals, Holm-adjusted p-values and verdicts.

use crate::abtest::{self, Counts, Verdict};
use crate::convert;
use crate::engine::{Engine, scope_keys};
use crate::error::LlmError;
use crate::request;
use crate::selection::Features;
use crate::store::{self, AbTestRow, RUNNING, Scope, Variant};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::pagination;
use codingagent_kernel::{idempotency, validate};

use codingagent_proto::codingagent::llm::v1 as pb;
use tonic::Status;
use uuid::Uuid;

/// A/B tests are operational resources: operators and services see them; to anyone else a
/// test id names nothing (`NOT_FOUND`).
pub(crate) async fn visible(engine: &Engine, caller: &Caller, id: &str) -> Result<AbTestRow, Status> {
    let not_found = || LlmError::NotFound { kind: "ab_test", id: id.to_owned() };
    let uuid = Uuid::parse_str(id).map_err(|_| LlmError::invalid("ab_test_id", "must be a UUID"))?;
    if !caller.is_operator() && !caller.is_service() {
        return Err(not_found().into());
    }
    store::ab_test(&engine.pool, uuid).await.map_err(LlmError::from)?.ok_or_else(|| not_found().into())
}

pub(crate) fn to_proto(test: &AbTestRow) -> pb::AbTest {
    pb::AbTest {
        id: test.id.to_string(),
        name: test.name.clone(),
        description: test.description.clone(),
        owner: test.owner.clone(),
        create_time: Some(convert::timestamp(test.created_at)),
        update_time: Some(convert::timestamp(test.updated_at)),
        state: i32::from(test.state),
        variants: test
            .variants
            .iter()
            .map(|v| pb::AbVariant { id: v.id.clone(), model: v.model.clone(), weight: v.weight as i32 })
            .collect(),
        scope: Some(pb::AbTestScope {
            task_types: test.scope.task_types.clone(),
            complexities: test.scope.complexities.clone(),
            languages: test.scope.languages.clone(),
        }),
        alpha: test.alpha,
        min_samples_per_variant: test.min_samples,
        stop_time: test.stopped_at.map(convert::timestamp),
        winner_variant_id: test.winner_variant_id.clone().unwrap_or_default(),
        promoted: test.promoted,
    }
}

pub(crate) async fn create(
    engine: &Engine,
    caller: &Caller,
    request: pb::CreateAbTestRequest,
) -> Result<pb::CreateAbTestResponse, Status> {
    caller.require_operator()?;
    let test = request.ab_test.unwrap_or_default();
    let mut violations = Vec::new();
    let name_length = test.name.chars().count();
    if name_length == 0 || name_length > 100 {
        violations.push(FieldViolation::new("ab_test.name", "must be 1..100 characters"));
    } else {
        violations.extend(validate::text("ab_test.name", &test.name).err());
    }
    if test.description.chars().count() > 2_000 {
        violations.push(FieldViolation::new("ab_test.description", "at most 2,000 characters"));
    } else {
        violations.extend(validate::text("ab_test.description", &test.description).err());
    }
    if !(2..=10).contains(&test.variants.len()) {
        violations.push(FieldViolation::new("ab_test.variants", "2..10 variants are required"));
    }
    let mut variants = Vec::new();
    for (index, variant) in test.variants.iter().enumerate() {
        let field = |name: &str| format!("ab_test.variants[{index}].{name}");
        if variant.weight < 1 || variant.weight > 1_000 {
            violations.push(FieldViolation::new(field("weight"), "must be 1..1000"));
        }
        match request::model_id(&field("model"), &variant.model) {
            Err(violation) => violations.push(violation),
            Ok(_) if engine.registry.get(&variant.model).is_none() => {
                violations.push(FieldViolation::new(
                    field("model"),
                    format!("{} is not in the registry", variant.model),
                ));
            }
            Ok(_) => {}
        }
        violations.extend(validate::text(&field("id"), &variant.id).err());
        let id = if variant.id.is_empty() { format!("v{index}") } else { variant.id.clone() };
        if variants.iter().any(|v: &Variant| v.id == id) {
            violations.push(FieldViolation::new(field("id"), "variant ids must be unique"));
        }
        variants.push(Variant { id, model: variant.model.clone(), weight: variant.weight.max(0) as u32 });
    }
    let alpha = if test.alpha == 0.0 { 0.05 } else { test.alpha };
    if !(alpha > 0.0 && alpha < 1.0) {
        violations.push(FieldViolation::new("ab_test.alpha", "must be between 0 and 1"));
    }
    let min_samples = if test.min_samples_per_variant == 0 { 30 } else { test.min_samples_per_variant };
    if min_samples < 1 {
        violations.push(FieldViolation::new("ab_test.min_samples_per_variant", "must be positive"));
    }
    violations.extend(idempotency::validate("request_id", &request.request_id).err());
    if !violations.is_empty() {
        return Err(LlmError::Invalid(violations).into());
    }
    let scope = test
        .scope
        .map(|s| Scope { task_types: s.task_types, complexities: s.complexities, languages: s.languages })
        .unwrap_or_default();
    let row = AbTestRow {
        id: Uuid::now_v7(),
        name: test.name,
        description: test.description,
        owner: caller.user_id().unwrap_or(&caller.subject).to_owned(),
        state: RUNNING,
        variants,
        scope,
        alpha,
        min_samples,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        stopped_at: None,
        winner_variant_id: None,
        promoted: false,
    };
    let request_id = (!request.request_id.is_empty()).then_some(request.request_id.as_str());
    let created = store::create_ab_test(&engine.pool, &row, request_id).await.map_err(|error| {
        match codingagent_kernel::error::DbErrorKind::of(&error) {
            codingagent_kernel::error::DbErrorKind::UniqueViolation => {
                LlmError::AlreadyExists(format!("a running test named {:?}", row.name))
            }
            _ => LlmError::from(error),
        }
    })?;
    Ok(pb::CreateAbTestResponse { ab_test: Some(to_proto(&created)) })
}

pub(crate) async fn list(
    engine: &Engine,
    caller: &Caller,
    request: pb::ListAbTestsRequest,
) -> Result<pb::ListAbTestsResponse, Status> {
    if !caller.is_operator() && !caller.is_service() {
        return Err(codingagent_kernel::error::permission_denied(
            "OPERATOR_REQUIRED",
            "listing A/B tests requires the operator role",
        ));
    }
    let limit = pagination::page_size(request.page_size, 50, 200)?;
    let after: Option<(chrono::DateTime<chrono::Utc>, Uuid)> = pagination::decode(&request.page_token)?;
    let state = match pb::AbTestState::try_from(request.state) {
        Ok(pb::AbTestState::Unspecified) => None,
        Ok(state) => Some(state as i16),
        Err(_) => return Err(LlmError::invalid("state", "unknown state").into()),
    };
    let rows = store::list_ab_tests(&engine.pool, state, after, limit + 1).await.map_err(LlmError::from)?;
    let (rows, next_page_token) = pagination::page(rows, limit, |t| (t.created_at, t.id));
    Ok(pb::ListAbTestsResponse { ab_tests: rows.iter().map(to_proto).collect(), next_page_token })
}

pub(crate) async fn assign(
    engine: &Engine,
    caller: &Caller,
    request: pb::AssignVariantRequest,
) -> Result<pb::AssignVariantResponse, Status> {
    subject_id(&request.subject_id)?;
    let test = visible(engine, caller, &request.ab_test_id).await?;
    if test.state != RUNNING {
        return Err(LlmError::FailedPrecondition("AB_TEST_STOPPED", "the test is stopped".into()).into());
    }
    let weights: Vec<u32> = test.variants.iter().map(|v| v.weight).collect();
    let variant = &test.variants[abtest::assign(&test.id.to_string(), &request.subject_id, &weights)];
    Ok(pb::AssignVariantResponse {
        variant: Some(pb::AbVariant {
            id: variant.id.clone(),
            model: variant.model.clone(),
            weight: variant.weight as i32,
        }),
    })
}

pub(crate) async fn record(
    engine: &Engine,
    caller: &Caller,
    request: pb::RecordAbOutcomeRequest,
) -> Result<pb::RecordAbOutcomeResponse, Status> {
    let mut violations = match subject_id(&request.subject_id) {
        Ok(()) => Vec::new(),
        Err(LlmError::Invalid(violations)) => violations,
        Err(error) => return Err(error.into()),
    };
    if let Some(score) = request.quality_score
        && !(0.0..=1.0).contains(&score)
    {
        violations.push(FieldViolation::new("quality_score", "must be between 0 and 1"));
    }
    violations.extend(idempotency::validate("request_id", &request.request_id).err());
    if !violations.is_empty() {
        return Err(LlmError::Invalid(violations).into());
    }
    let test = visible(engine, caller, &request.ab_test_id).await?;
    if test.state != RUNNING {
        return Err(LlmError::FailedPrecondition("AB_TEST_STOPPED", "the test is stopped".into()).into());
    }
    let weights: Vec<u32> = test.variants.iter().map(|v| v.weight).collect();
    let variant = &test.variants[abtest::assign(&test.id.to_string(), &request.subject_id, &weights)];
    let latency_ms = request.latency.as_ref().map_or(0, |d| convert::from_duration(d).as_millis() as i64);
    let tokens = request.usage.as_ref().map_or(0, |u| u.input_tokens + u.output_tokens);
    let key = (!request.request_id.is_empty()).then(|| format!("{}:{}", caller.subject, request.request_id));
    store::record_outcome(
        &engine.pool,
        test.id,
        &variant.id,
        &request.subject_id,
        request.success,
        latency_ms,
        tokens,
        request.quality_score,
        key.as_deref(),
    )
    .await
    .map_err(LlmError::from)?;
    Ok(pb::RecordAbOutcomeResponse { variant_id: variant.id.clone() })
}

/// An A/B subject: any non-empty text.
fn subject_id(subject_id: &str) -> Result<(), LlmError> {
    if subject_id.is_empty() {
        return Err(LlmError::invalid("subject_id", "must not be empty"));
    }
    validate::text("subject_id", subject_id).map_err(|violation| LlmError::Invalid(vec![violation]))
}

pub(crate) async fn results(engine: &Engine, test: &AbTestRow) -> Result<pb::AbTestResults, Status> {
    let stats = store::variant_stats(&engine.pool, test.id).await.map_err(LlmError::from)?;
    let stat = |id: &str| stats.iter().find(|(v, _)| v == id).map(|(_, s)| s.clone()).unwrap_or_default();
    let counts: Vec<Counts> = test
        .variants
        .iter()
        .map(|v| {
            let s = stat(&v.id);
            Counts { trials: s.trials as u64, successes: s.successes as u64 }
        })
        .collect();
    let comparisons = abtest::compare(&counts, test.alpha, test.min_samples as u64);
    let variants: Vec<pb::AbVariantResult> = test
        .variants
        .iter()
        .zip(&comparisons)
        .map(|(variant, comparison)| {
            let s = stat(&variant.id);
            pb::AbVariantResult {
                variant_id: variant.id.clone(),
                model: variant.model.clone(),
                samples: s.trials,
                successes: s.successes,
                success_rate: if s.trials == 0 { 0.0 } else { s.successes as f64 / s.trials as f64 },
                success_rate_lower: comparison.interval.0,
                success_rate_upper: comparison.interval.1,
                mean_latency: Some(convert::duration(std::time::Duration::from_millis(
                    s.mean_latency_ms.max(0.0) as u64,
                ))),
                mean_tokens: s.mean_tokens,
                mean_quality_score: s.mean_quality,
                p_value: comparison.p_value,
                verdict: match comparison.verdict {
                    Verdict::Control => pb::AbVerdict::Control,
                    Verdict::InsufficientData => pb::AbVerdict::InsufficientData,
                    Verdict::NotSignificant => pb::AbVerdict::NotSignificant,
                    Verdict::SignificantlyBetter => pb::AbVerdict::SignificantlyBetter,
                    Verdict::SignificantlyWorse => pb::AbVerdict::SignificantlyWorse,
                } as i32,
            }
        })
        .collect();
    // The leader: the best significantly-better variant, else the control.
    let leading = variants
        .iter()
        .filter(|v| v.verdict == pb::AbVerdict::SignificantlyBetter as i32)
        .max_by(|a, b| a.success_rate.total_cmp(&b.success_rate))
        .or_else(|| variants.first())
        .map(|v| v.variant_id.clone())
        .unwrap_or_default();
    Ok(pb::AbTestResults {
        ab_test_id: test.id.to_string(),
        variants,
        leading_variant_id: leading,
        compute_time: Some(convert::now()),
    })
}

pub(crate) async fn stop(
    engine: &Engine,
    caller: &Caller,
    request: pb::StopAbTestRequest,
) -> Result<pb::StopAbTestResponse, Status> {
    caller.require_operator()?;
    validate::text("winner_variant_id", &request.winner_variant_id)
        .map_err(|v| LlmError::Invalid(vec![v]))?;
    let test = visible(engine, caller, &request.ab_test_id).await?;
    if test.state != RUNNING {
        return Ok(pb::StopAbTestResponse {
            ab_test: Some(to_proto(&test)),
            results: Some(results(engine, &test).await?),
        });
    }
    let results = results(engine, &test).await?;
    let winner = if request.winner_variant_id.is_empty() {
        results.leading_variant_id.clone()
    } else {
        request.winner_variant_id.clone()
    };
    let Some(winning) = test.variants.iter().find(|v| v.id == winner) else {
        return Err(LlmError::invalid("winner_variant_id", "is not a variant of this test").into());
    };
    let mut tx = engine.pool.begin().await.map_err(LlmError::from)?;
    let stopped = store::stop_ab_test(&mut tx, test.id, Some(&winner), request.promote_winner)
        .await
        .map_err(LlmError::from)?;
    let Some(stopped) = stopped else {
        // Stopped concurrently: return the current state.
        drop(tx);
        let current = visible(engine, caller, &request.ab_test_id).await?;
        return Ok(pb::StopAbTestResponse { ab_test: Some(to_proto(&current)), results: Some(results) });
    };
    if request.promote_winner {
        for key in promotion_keys(&stopped.scope) {
            store::promote_default(&mut tx, &key, &winning.model, test.id).await.map_err(LlmError::from)?;
        }
    }
    let actor = caller.actor();
    let proto = to_proto(&stopped);
    crate::events::ab_test_concluded(&mut tx, actor, &proto, &results).await.map_err(LlmError::from)?;
    tx.commit().await.map_err(LlmError::from)?;
    Ok(pb::StopAbTestResponse { ab_test: Some(proto), results: Some(results) })
}

/// The scope keys a promoted winner becomes the default for (see `engine::scope_keys`).
fn promotion_keys(scope: &Scope) -> Vec<String> {
    match (scope.task_types.is_empty(), scope.complexities.is_empty()) {
        (true, _) => vec!["all".to_owned()],
        (false, true) => scope
            .task_types
            .iter()
            .map(|t| scope_keys(&Features { task_type: *t, ..Features::default() })[1].clone())
            .collect(),
        (false, false) => scope
            .task_types
            .iter()
            .flat_map(|t| {
                scope.complexities.iter().map(move |c| {
                    scope_keys(&Features { task_type: *t, complexity: *c, ..Features::default() })[0].clone()
                })
            })
            .collect(),
    }
}
