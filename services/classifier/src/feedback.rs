//! Feedback: a user's correction of their own classification becomes a training sample (the
//! latest correction of a classification replaces the earlier one's) and an event.

use crate::convert::timestamp;
use crate::corpus::split_mark;
use crate::engine::Engine;
use crate::error::{ClassifierError, Result};
use crate::heuristic::{COMPLEXITIES, TASK_TYPES};
use crate::store;
use crate::training::Sample;
use crate::validate::check_text;
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::idempotency;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::kafka::{enqueue, topics};
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::events::v1 as events;
use uuid::Uuid;

const MAX_COMMENT: usize = 2_000;

/// SubmitFeedback: the owner's correction of a classification, as feedback, a training
/// sample replacing that of any earlier correction, and a `FeedbackSubmitted` event.
pub(crate) async fn submit(
    engine: &Engine,
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
    let mut tx = engine.pool.begin().await?;
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
        actor: Some(caller.actor()),
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
