//! What happens between CreateTask and a worker: classification (classifier service), the
//! strategy (from the complexity unless overridden) and the model (llm service), then the
//! first run is queued — PENDING → CLASSIFIED → QUEUED in one transaction. It runs right
//! after the creation commits and, for tasks whose follow-up was lost with a crashed
//! instance, from a periodic sweep; a lease on the task keeps two instances from doing it
//! twice. Either service being down does not stop a task: the built-in heuristic and the
//! configured fallback model are used, and the log says so.

use crate::engine::Engine;
use crate::error::Result;
use crate::lifecycle;
use crate::logs::{self, Line};
use crate::store::runs;
use crate::store::tasks::{self, Budget, Change, TaskRow};
use codingagent_proto::codingagent::common::v1::{Actor, Complexity, Strategy, TaskType};
use codingagent_proto::codingagent::events::v1 as events;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::helpers::now;

/// Lease on a task while it is classified.
const LEASE_SECS: i64 = 60;

/// Advances `task` (or, for `None`, the oldest waiting task) through classification and
/// selection; repeats for `None` until nothing waits.
pub(crate) async fn advance(engine: &Engine, task: Option<uuid::Uuid>) {
    loop {
        let claimed = async {
            let mut conn = engine.pool.acquire().await?;
            tasks::claim_pipeline(&mut conn, task, LEASE_SECS).await
        };
        let row = match claimed.await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot claim tasks to classify");
                return;
            }
        };
        let id = row.id;
        if let Err(error) = classify_and_queue(engine, row).await {
            tracing::warn!(%error, task_id = %id, "cannot classify and queue the task; the sweep retries");
        }
        if task.is_some() {
            return;
        }
    }
}

/// The periodic sweep.
pub(crate) async fn sweep(engine: std::sync::Arc<Engine>) -> anyhow::Result<()> {
    advance(&engine, None).await;
    Ok(())
}

async fn classify_and_queue(engine: &Engine, row: TaskRow) -> Result<()> {
    let actor = Actor::service("orchestration");
    let id = row.id.to_string();
    let mut notes: Vec<Line> = Vec::new();
    let (classification, _) = match row.classification() {
        Some(done) => (done, 0),
        None => match engine.clients.classify(&row.owner, &id, &row.text).await {
            Ok(verdict) => verdict,
            Err(why) => {
                notes.push(
                    Line::orchestrator(format!(
                        "classifier unavailable ({why}); using the built-in heuristic"
                    ))
                    .warn(),
                );
                (heuristic(&row.text), 0)
            }
        },
    };
    let strategy = if row.requested_strategy != 0 {
        Strategy::try_from(i32::from(row.requested_strategy)).unwrap_or(Strategy::Iterative)
    } else {
        strategy_for(Complexity::try_from(classification.complexity).unwrap_or(Complexity::Medium))
    };
    let selection = match engine.clients.select(&row.owner, &id, &row.requested_model, &classification).await
    {
        Ok(selection) => selection,
        Err(why) => {
            let model = if row.requested_model.is_empty() {
                engine.config.agent.fallback_model.clone()
            } else {
                row.requested_model.clone()
            };
            notes.push(
                Line::orchestrator(format!(
                    "llm service could not select a model ({why}); using {}",
                    if model.is_empty() { "the llm service's default at call time" } else { &model }
                ))
                .warn(),
            );
            crate::clients::Selection { model, ..Default::default() }
        }
    };
    notes.push(Line::orchestrator(format!(
        "classified as {} / {} (confidence {:.2}); strategy {}; model {}",
        TaskType::try_from(classification.task_type)
            .map(|t| t.as_str_name())
            .unwrap_or("?")
            .trim_start_matches("TASK_TYPE_"),
        Complexity::try_from(classification.complexity)
            .map(|c| c.as_str_name())
            .unwrap_or("?")
            .trim_start_matches("COMPLEXITY_"),
        classification.task_type_confidence,
        strategy.as_str_name().trim_start_matches("STRATEGY_"),
        if selection.model.is_empty() { "(llm default)" } else { &selection.model },
    )));

    let mut tx = engine.pool.begin().await?;
    let Some(current) = tasks::get(&mut tx, row.id, true).await? else { return Ok(()) };
    let mut current = current;
    if current.state() == pb::TaskState::Pending {
        let change = Change {
            classification: Some(classification.clone()),
            strategy: Some(strategy as i16),
            model: Some(selection.model.clone()),
            ab: Some((selection.ab_test_id.clone(), selection.ab_variant_id.clone())),
            ..Change::default()
        };
        current =
            lifecycle::transition(&mut tx, &current, pb::TaskState::Classified, change, &actor, "classified")
                .await?;
        let event = events::TaskClassified {
            task_id: id.clone(),
            actor: Some(actor.clone()),
            occur_time: Some(now()),
            classification: Some(classification.clone()),
            strategy: strategy as i32,
            model: selection.model.clone(),
            model_selection_reason: selection.reason,
            owner: row.owner.clone(),
            ab_test_id: selection.ab_test_id.clone(),
            ab_variant_id: selection.ab_variant_id.clone(),
        };
        lifecycle::publish(&mut tx, &current, &event).await?;
    }
    if current.state() != pb::TaskState::Classified {
        // Cancelled (or otherwise moved on) while it was being classified.
        tx.commit().await?;
        return Ok(());
    }
    let budget = Budget {
        tokens: current.max_tokens,
        iterations: current.max_iterations,
        wall_secs: current.max_wall_secs,
    };
    let run =
        runs::insert(&mut tx, current.id, &current.owner, 1, current.strategy, &current.model, budget, None)
            .await?;
    let change = Change { current_run: Some(run.id), ..Change::default() };
    lifecycle::transition(&mut tx, &current, pb::TaskState::Queued, change, &actor, "queued").await?;
    let event = events::TaskQueued {
        task_id: id.clone(),
        actor: Some(actor.clone()),
        occur_time: Some(now()),
        run_id: run.id.to_string(),
        attempt: 1,
        resume_from_checkpoint: false,
        owner: row.owner.clone(),
    };
    lifecycle::publish(&mut tx, &current, &event).await?;
    notes.push(Line::orchestrator(format!("queued as run {}", run.id)));
    logs::append(&mut tx, current.id, &notes).await?;
    tx.commit().await?;
    Ok(())
}

/// Complexity → strategy (ARCHITECTURE §7).
pub(crate) fn strategy_for(complexity: Complexity) -> Strategy {
    match complexity {
        Complexity::Simple => Strategy::SingleShot,
        Complexity::Complex => Strategy::MultiAgent,
        Complexity::Medium | Complexity::Unspecified => Strategy::Iterative,
    }
}

/// The choice when the classifier is down: scope words and length suggest complexity.
pub(crate) fn heuristic(text: &str) -> pb::TaskClassification {
    let lower = text.to_lowercase();
    let wide = ["refactor", "migrate", "across", "every ", "all ", "rewrite", "redesign"]
        .iter()
        .filter(|w| lower.contains(*w))
        .count();
    let complexity = if wide >= 2 || text.len() > 2_000 {
        Complexity::Complex
    } else if text.len() < 160 && !text.contains('\n') && wide == 0 {
        Complexity::Simple
    } else {
        Complexity::Medium
    };
    let task_type =
        if ["fix", "bug", "error", "crash", "fail", "broken", "wrong"].iter().any(|w| lower.contains(w)) {
            TaskType::BugFix
        } else if lower.contains("test") {
            TaskType::Test
        } else if lower.contains("refactor") {
            TaskType::Refactor
        } else {
            TaskType::Feature
        };
    pb::TaskClassification {
        task_type: task_type as i32,
        complexity: complexity as i32,
        task_type_confidence: 0.3,
        complexity_confidence: 0.3,
        language: 0,
        classifier_version: "orchestration-heuristic".into(),
        classification_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complexity_picks_the_strategy() {
        assert_eq!(strategy_for(Complexity::Simple), Strategy::SingleShot);
        assert_eq!(strategy_for(Complexity::Medium), Strategy::Iterative);
        assert_eq!(strategy_for(Complexity::Complex), Strategy::MultiAgent);
    }

    #[test]
    fn the_fallback_heuristic_reads_scope_and_size() {
        let simple = heuristic("Fix the off-by-one in paginate()");
        assert_eq!(
            (simple.complexity, simple.task_type),
            (Complexity::Simple as i32, TaskType::BugFix as i32)
        );
        assert_eq!(
            heuristic("Refactor every handler and migrate all callers").complexity,
            Complexity::Complex as i32
        );
        assert_eq!(
            heuristic("Add a --verbose flag.\nIt should print each file.").complexity,
            Complexity::Medium as i32
        );
    }
}
