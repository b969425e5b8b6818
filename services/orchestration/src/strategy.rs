//! The strategies as one pure state machine over a run's [`Progress`]: after each step, what
//! comes next. SingleShot proposes once and validates; Iterative feeds test failures back for
//! up to the run's iteration budget; MultiAgent plans work items, has a coder implement each
//! and a reviewer accept it, then tests the whole. Apply errors and malformed answers go
//! back to the model in every strategy (they cost an iteration), and an answer that repeats
//! one that already failed ends the run as stuck. The progress is the checkpoint: a resumed
//! run continues from it exactly.

use crate::agent::answer::Answer;
use crate::agent::prompts;
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1::{PlanItemState, StepKind, TaskFailureReason};
use serde::{Deserialize, Serialize};

/// The step a run does next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Next {
    #[default]
    Prepare,
    Plan,
    Generate,
    Apply,
    Review,
    Test,
    Commit,
    Publish,
    Done,
}

impl Next {
    pub(crate) fn kind(self) -> StepKind {
        match self {
            Next::Prepare => StepKind::PrepareWorkspace,
            Next::Plan => StepKind::Plan,
            Next::Generate => StepKind::Generate,
            Next::Apply => StepKind::Apply,
            Next::Review => StepKind::Review,
            Next::Test => StepKind::Test,
            Next::Commit => StepKind::Commit,
            Next::Publish | Next::Done => StepKind::Publish,
        }
    }
}

/// One message of the coder's conversation (the system prompt is not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Turn {
    pub assistant: bool,
    pub text: String,
}

/// A planner's work item as the run tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlanEntry {
    pub title: String,
    pub description: String,
    pub files: Vec<String>,
    pub state: i32,
    pub step_id: String,
    pub review: String,
}

/// Per-file statistics of the final change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileStat {
    pub path: String,
    pub old_path: String,
    pub kind: char,
    pub additions: i32,
    pub deletions: i32,
}

/// Why a run ends without a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub reason: i32,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(reason: TaskFailureReason, message: impl Into<String>) -> Self {
        Self { reason: reason as i32, message: message.into() }
    }
}

/// A run's progress: everything needed to continue it, stored with every completed step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub next: Next,
    pub strategy: i32,
    pub base_commit: String,
    /// The change so far (`git diff --binary` against the base), replayed on resumption.
    pub patch: String,
    pub test_command: String,
    /// Iterations finished (a test run, or an edit that failed to apply or parse).
    pub iterations: i32,
    pub tool_turns: u32,
    pub transcript: Vec<Turn>,
    /// The latest answer with edits, for the APPLY step.
    pub answer: String,
    /// Hashes of answers whose edits failed, to notice a model going round in circles.
    pub failed_answers: Vec<u64>,
    pub plan: Vec<PlanEntry>,
    pub item: usize,
    pub review_rounds: u32,
    pub last_test_passed: Option<bool>,
    pub head_commit: String,
    pub files: Vec<FileStat>,
    pub final_diff: String,
    pub format_patch: String,
    pub failure: Option<Failure>,
}

/// Stored turns are capped so a checkpoint stays small whatever the test printed.
const MAX_TURN_BYTES: usize = 24 * 1024;
/// Review rounds per plan item before the item is given up on.
pub(crate) const MAX_REVIEW_ROUNDS: u32 = 2;

fn hash(text: &str) -> u64 {
    crate::text::fnv(text.as_bytes())
}

fn cap(text: &str) -> String {
    let kept = crate::text::prefix(text, MAX_TURN_BYTES);
    if kept.len() == text.len() { text.to_owned() } else { format!("{kept}\n[cut]") }
}

impl Progress {
    pub(crate) fn new(strategy: Strategy) -> Self {
        Self { strategy: strategy as i32, ..Self::default() }
    }

    pub(crate) fn strategy(&self) -> Strategy {
        Strategy::try_from(self.strategy).unwrap_or(Strategy::Iterative)
    }

    pub(crate) fn say(&mut self, text: impl AsRef<str>) {
        self.transcript.push(Turn { assistant: false, text: cap(text.as_ref()) });
    }

    fn heard(&mut self, text: &str) {
        self.transcript.push(Turn { assistant: true, text: cap(text) });
    }

    fn fail(&mut self, reason: TaskFailureReason, message: impl Into<String>) {
        self.failure = Some(Failure::new(reason, message));
        self.next = Next::Done;
    }

    /// An iteration ended without success: try again within `max_iterations`, or stop.
    fn iteration_failed(&mut self, max_iterations: i32, why: TaskFailureReason, message: &str) {
        self.iterations += 1;
        self.tool_turns = 0;
        if self.iterations >= max_iterations {
            self.fail(why, format!("{message} after {} iterations", self.iterations));
        } else {
            self.next = Next::Generate;
        }
    }

    pub(crate) fn after_prepare(&mut self, base_commit: String, test_command: String, first_prompt: String) {
        self.base_commit = base_commit;
        self.test_command = test_command;
        self.say(first_prompt);
        self.next = if self.strategy() == Strategy::MultiAgent { Next::Plan } else { Next::Generate };
    }

    pub(crate) fn after_plan(&mut self, items: Vec<PlanEntry>) {
        self.plan = items;
        self.item = 0;
        self.start_item();
    }

    fn start_item(&mut self) {
        let count = self.plan.len();
        if let Some(item) = self.plan.get_mut(self.item) {
            item.state = PlanItemState::InProgress as i32;
            let prompt =
                prompts::plan_item(self.item + 1, count, &item.title, &item.description, &item.files);
            self.review_rounds = 0;
            self.say(prompt);
            self.next = Next::Generate;
        } else {
            self.next = Next::Test;
        }
    }

    /// The model answered. `tool_output` holds the results of its tool calls, if any.
    pub(crate) fn after_generate(
        &mut self,
        text: &str,
        answer: &Answer,
        tool_output: Option<String>,
        max_iterations: i32,
        tool_turns: u32,
    ) {
        self.heard(text);
        if answer.has_edits() {
            if self.failed_answers.contains(&hash(text)) {
                self.fail(
                    TaskFailureReason::IterationsExhausted,
                    "stuck: the model repeated an edit that had already failed",
                );
                return;
            }
            self.answer = text.to_owned();
            self.next = Next::Apply;
        } else if let Some(output) = tool_output {
            self.tool_turns += 1;
            self.say(output);
            if self.tool_turns > tool_turns {
                self.iteration_failed(
                    max_iterations,
                    TaskFailureReason::IterationsExhausted,
                    "no edit was proposed",
                );
            } else {
                self.next = Next::Generate;
            }
        } else {
            self.say(prompts::no_edits(&answer.broken));
            self.failed_answers.push(hash(text));
            self.iteration_failed(
                max_iterations,
                TaskFailureReason::IterationsExhausted,
                "no usable edit was proposed",
            );
        }
    }

    pub(crate) fn after_apply(&mut self, result: Result<String, String>, max_iterations: i32) {
        match result {
            Ok(patch) => {
                self.patch = patch;
                self.next = if self.strategy() == Strategy::MultiAgent { Next::Review } else { Next::Test };
            }
            Err(error) => {
                self.failed_answers.push(hash(&self.answer));
                self.say(prompts::apply_failed(&error));
                self.iteration_failed(
                    max_iterations,
                    TaskFailureReason::PatchNotApplicable,
                    "the edits never applied",
                );
            }
        }
    }

    pub(crate) fn after_review(&mut self, approved: bool, remark: &str, step_id: &str) {
        let Some(item) = self.plan.get_mut(self.item) else {
            self.next = Next::Test;
            return;
        };
        item.review = remark.chars().take(2_000).collect();
        item.step_id = step_id.to_owned();
        if approved || self.review_rounds + 1 >= MAX_REVIEW_ROUNDS {
            item.state = if approved { PlanItemState::Done } else { PlanItemState::Failed } as i32;
            self.item += 1;
            self.start_item();
        } else {
            self.review_rounds += 1;
            self.say(format!("The reviewer rejected the change for this item:\n{remark}\nRevise it."));
            self.next = Next::Generate;
        }
    }

    pub(crate) fn after_test(&mut self, passed: bool, report: String, max_iterations: i32) {
        self.last_test_passed = Some(passed);
        if passed {
            self.iterations += 1;
            self.next = Next::Commit;
            return;
        }
        self.failed_answers.push(hash(&self.answer));
        if self.strategy() == Strategy::SingleShot {
            self.iterations += 1;
            self.fail(TaskFailureReason::TestsFailed, "the tests still fail after the single proposal");
            return;
        }
        self.say(report);
        self.iteration_failed(max_iterations, TaskFailureReason::IterationsExhausted, "the tests still fail");
    }

    pub(crate) fn after_commit(&mut self, head: String, files: Vec<FileStat>, diff: String, patch: String) {
        self.head_commit = head;
        self.files = files;
        self.final_diff = diff;
        self.format_patch = patch;
        self.next = Next::Publish;
    }

    pub(crate) fn after_publish(&mut self) {
        self.next = Next::Done;
    }

    /// The coder's messages: the first request and the latest turns, so a long run keeps
    /// the task in view without its prompt growing without bound.
    pub(crate) fn conversation(&self, keep_last: usize) -> Vec<&Turn> {
        let mut turns: Vec<&Turn> = Vec::new();
        if let Some(first) = self.transcript.first() {
            turns.push(first);
        }
        let start = self.transcript.len().saturating_sub(keep_last).max(1);
        turns.extend(self.transcript[start..].iter());
        turns
    }
}

/// The planner's items: the first JSON object's `items`, else numbered lines, else the
/// whole request as one item. At most `max` items.
pub(crate) fn parse_plan(text: &str, request_title: &str, max: usize) -> Vec<PlanEntry> {
    let entry = |title: String, description: String, files: Vec<String>| PlanEntry {
        title: title.chars().take(200).collect(),
        description: description.chars().take(4_000).collect(),
        files: files.into_iter().take(20).collect(),
        state: PlanItemState::Pending as i32,
        step_id: String::new(),
        review: String::new(),
    };
    if let (Some(start), Some(end)) = (text.find('{'), text.rfind('}'))
        && start < end
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text[start..=end])
        && let Some(items) = value.get("items").and_then(|i| i.as_array())
    {
        let parsed: Vec<PlanEntry> = items
            .iter()
            .filter_map(|item| {
                let title = item.get("title")?.as_str()?.trim().to_owned();
                let description =
                    item.get("description").and_then(|d| d.as_str()).unwrap_or_default().to_owned();
                let files = item
                    .get("files")
                    .and_then(|f| f.as_array())
                    .map(|f| f.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                (!title.is_empty()).then(|| entry(title, description, files))
            })
            .take(max)
            .collect();
        if !parsed.is_empty() {
            return parsed;
        }
    }
    let numbered: Vec<PlanEntry> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest =
                l.split_once(". ").filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty())?.1;
            Some(entry(rest.to_owned(), String::new(), Vec::new()))
        })
        .take(max)
        .collect();
    if !numbered.is_empty() {
        return numbered;
    }
    vec![entry(request_title.to_owned(), "Implement the whole request.".into(), Vec::new())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::answer::parse;

    const EDIT: &str = "a.py\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n";

    fn started(strategy: Strategy) -> Progress {
        let mut p = Progress::new(strategy);
        p.after_prepare("base".into(), "make test".into(), "Request: fix it".into());
        p
    }

    #[test]
    fn single_shot_proposes_applies_tests_commits_publishes() {
        let mut p = started(Strategy::SingleShot);
        assert_eq!(p.next, Next::Generate);
        p.after_generate(EDIT, &parse(EDIT), None, 5, 4);
        assert_eq!(p.next, Next::Apply);
        p.after_apply(Ok("diff".into()), 5);
        assert_eq!(p.next, Next::Test);
        p.after_test(true, String::new(), 5);
        assert_eq!((p.next, p.iterations), (Next::Commit, 1));
        p.after_commit("head".into(), vec![], "diff".into(), "patch".into());
        p.after_publish();
        assert_eq!((p.next, p.failure.clone()), (Next::Done, None));
    }

    #[test]
    fn single_shot_fails_on_failing_tests_but_iterative_tries_again_with_the_output() {
        let mut single = started(Strategy::SingleShot);
        single.after_generate(EDIT, &parse(EDIT), None, 5, 4);
        single.after_apply(Ok("d".into()), 5);
        single.after_test(false, "FAILED".into(), 5);
        assert_eq!(single.failure.unwrap().reason, TaskFailureReason::TestsFailed as i32);

        let mut iterative = started(Strategy::Iterative);
        iterative.after_generate(EDIT, &parse(EDIT), None, 2, 4);
        iterative.after_apply(Ok("d".into()), 2);
        iterative.after_test(false, "FAILED: test_x".into(), 2);
        assert_eq!((iterative.next, iterative.iterations), (Next::Generate, 1));
        assert_eq!(iterative.transcript.last().unwrap().text, "FAILED: test_x");
        // The same edit again is a model going round in circles.
        iterative.after_generate(EDIT, &parse(EDIT), None, 2, 4);
        assert!(iterative.failure.unwrap().message.starts_with("stuck"));
    }

    #[test]
    fn apply_errors_and_malformed_answers_go_back_to_the_model_within_the_budget() {
        let mut p = started(Strategy::SingleShot);
        p.after_generate(EDIT, &parse(EDIT), None, 3, 4);
        p.after_apply(Err("a.py: the SEARCH text was not found.".into()), 3);
        assert_eq!(p.next, Next::Generate);
        assert!(p.transcript.last().unwrap().text.contains("was not found"));
        p.after_generate("I think it is fine.", &parse("I think it is fine."), None, 3, 4);
        assert_eq!((p.next, p.iterations), (Next::Generate, 2));
        assert!(p.transcript.last().unwrap().text.contains("no edit and no tool call"));
        p.after_generate("still prose", &parse("still prose"), None, 3, 4);
        assert_eq!(p.failure.unwrap().reason, TaskFailureReason::IterationsExhausted as i32);
    }

    #[test]
    fn tool_turns_are_limited_per_iteration() {
        let mut p = started(Strategy::Iterative);
        let ask = "ACTION: open a.py";
        for _ in 0..2 {
            p.after_generate(ask, &parse(ask), Some("a.py (lines 1-1 of 1)".into()), 5, 2);
            assert_eq!((p.next, p.iterations), (Next::Generate, 0));
        }
        p.after_generate(ask, &parse(ask), Some("…".into()), 5, 2);
        assert_eq!((p.next, p.iterations, p.tool_turns), (Next::Generate, 1, 0));
    }

    #[test]
    fn multi_agent_plans_codes_reviews_each_item_then_tests() {
        let mut p = started(Strategy::MultiAgent);
        assert_eq!(p.next, Next::Plan);
        p.after_plan(parse_plan(r#"{"items":[{"title":"one","files":["a.py"]},{"title":"two"}]}"#, "t", 8));
        assert_eq!((p.next, p.plan.len()), (Next::Generate, 2));
        assert_eq!(p.plan[0].state, PlanItemState::InProgress as i32);
        p.after_generate(EDIT, &parse(EDIT), None, 5, 4);
        p.after_apply(Ok("d".into()), 5);
        assert_eq!(p.next, Next::Review);
        p.after_review(false, "missing a test", "s1");
        assert_eq!(p.next, Next::Generate);
        let second = EDIT.replace("x = 2", "x = 3");
        p.after_generate(&second, &parse(&second), None, 5, 4);
        p.after_apply(Ok("d2".into()), 5);
        p.after_review(true, "APPROVE", "s2");
        assert_eq!((p.plan[0].state, p.item), (PlanItemState::Done as i32, 1));
        assert!(p.transcript.last().unwrap().text.starts_with("Work item 2 of 2: two"));
        let third = EDIT.replace("x = 2", "x = 4");
        p.after_generate(&third, &parse(&third), None, 5, 4);
        p.after_apply(Ok("d3".into()), 5);
        p.after_review(true, "APPROVE", "s3");
        assert_eq!(p.next, Next::Test);
    }

    #[test]
    fn plans_parse_from_json_numbered_lines_or_fall_back_to_one_item() {
        assert_eq!(parse_plan("Sure:\n```json\n{\"items\":[{\"title\":\"a\"}]}\n```", "t", 8)[0].title, "a");
        let numbered = parse_plan("1. add parse()\n2. add tests\n", "t", 8);
        assert_eq!(
            numbered.iter().map(|e| e.title.as_str()).collect::<Vec<_>>(),
            ["add parse()", "add tests"]
        );
        assert_eq!(parse_plan("no idea", "the request", 8)[0].title, "the request");
        assert_eq!(parse_plan("1. a\n2. b\n3. c\n", "t", 2).len(), 2);
    }

    #[test]
    fn the_conversation_keeps_the_request_and_the_latest_turns() {
        let mut p = started(Strategy::Iterative);
        for i in 0..20 {
            p.say(format!("turn {i}"));
        }
        let turns = p.conversation(4);
        assert_eq!(turns.len(), 5);
        assert_eq!(turns[0].text, "Request: fix it");
        assert_eq!(turns[4].text, "turn 19");
    }
}
