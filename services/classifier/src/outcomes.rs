//! Learning from finished tasks: `TaskSucceeded` and `TaskFailed` say what a task turned out
//! to be, which becomes a training sample (source OUTCOME) exactly once per task — the inbox
//! drops redelivered events and the sample's origin is unique.
//!
//! The task type is the task owner's correction when they gave one (nobody else's), else the
//! classification the task ran with. The complexity is read from the evidence: a change of
//! one file and a few lines done in one iteration was simple, many files, many lines or many
//! iterations were complex, and a failed task was at least one level harder than it was
//! classified.

use crate::corpus::split_mark;
use crate::store;
use crate::training::Sample;
use codingagent_kernel::kafka::{EventHandler, HandlerError, ReceivedEvent};
use codingagent_proto::codingagent::events::v1::TaskExecutionSummary;
use codingagent_proto::helpers::TaskOutcome;
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskOutcomes;

/// Complexity index (0 simple, 1 medium, 2 complex) from what the task took.
pub(crate) fn observed_complexity(
    summary: &TaskExecutionSummary,
    succeeded: bool,
    classified: usize,
) -> usize {
    if !succeeded {
        return (classified + 1).min(2);
    }
    let lines = summary.lines_added + summary.lines_removed;
    if summary.iterations >= 6 || summary.files_changed > 8 || lines > 400 {
        2
    } else if summary.iterations <= 1 && summary.files_changed <= 1 && lines <= 30 {
        0
    } else {
        1
    }
}

impl EventHandler for TaskOutcomes {
    async fn handle(&self, conn: &mut PgConnection, event: &ReceivedEvent) -> Result<(), HandlerError> {
        // Other task events say nothing about what the task was.
        let Some(TaskOutcome { task_id, succeeded, summary }) =
            TaskOutcome::decode(&event.event_type, &event.payload).map_err(HandlerError::permanent)?
        else {
            return Ok(());
        };
        let Some(summary) = summary else { return Ok(()) };
        let text = summary.text.trim();
        if task_id.is_empty() || !(10..=10_000).contains(&text.chars().count()) {
            return Ok(());
        }
        let classification = summary.classification.clone().unwrap_or_default();
        let corrected = store::corrected_labels(conn, &task_id, &summary.owner).await?;
        let pick = |corrected: Option<i16>, classified: i32| match corrected {
            Some(c) if c > 0 => i32::from(c),
            _ => classified,
        };
        let task_type = pick(corrected.map(|c| c.0), classification.task_type);
        let classified_complexity = pick(corrected.map(|c| c.1), classification.complexity);
        if !(1..=9).contains(&task_type) || !(1..=3).contains(&classified_complexity) {
            return Ok(()); // never classified: nothing to learn the type from
        }
        let sample = Sample {
            text: text.to_owned(),
            task_type: (task_type - 1) as usize,
            complexity: observed_complexity(&summary, succeeded, (classified_complexity - 1) as usize),
            split: split_mark(&task_id, None),
            weight: 1.0,
        };
        store::insert_sample(conn, store::OUTCOME, &task_id, None, None, &sample).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(iterations: i32, files: i32, lines: i32) -> TaskExecutionSummary {
        TaskExecutionSummary { iterations, files_changed: files, lines_added: lines, ..Default::default() }
    }

    #[test]
    fn complexity_follows_what_the_task_took() {
        assert_eq!(observed_complexity(&summary(1, 1, 12), true, 2), 0, "small and quick was simple");
        assert_eq!(observed_complexity(&summary(3, 3, 120), true, 0), 1);
        assert_eq!(observed_complexity(&summary(7, 2, 40), true, 0), 2, "many iterations");
        assert_eq!(observed_complexity(&summary(2, 12, 300), true, 0), 2, "many files");
        assert_eq!(observed_complexity(&summary(1, 1, 5), false, 0), 1, "a failure was harder");
        assert_eq!(observed_complexity(&summary(1, 1, 5), false, 2), 2);
    }
}
