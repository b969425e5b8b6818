//! Whole runs against fixture repositories: each strategy, recovery from bad edits and
//! malformed answers, and the change a run leaves behind.

use crate::double::Role;
use crate::fixtures;
use crate::harness::{Platform, create, log_text, task_request, wait_for};
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn kinds(run: &pb::Run) -> Vec<pb::StepKind> {
    run.steps.iter().map(|s| s.kind()).collect()
}

async fn run_of(client: &mut crate::harness::Client, task: &pb::Task) -> pb::Run {
    client
        .get_run(pb::GetRunRequest { run_id: task.current_run_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

#[tokio::test]
async fn single_shot_fixes_a_fixture_in_one_proposal() {
    let platform = Platform::start(|_| {}).await;
    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let mut alice = platform.orchestration.user("alice").await;
    let repo = fixtures::paging();
    let task = create(
        &mut alice,
        task_request(&repo, "Fix paginate(): it returns one item too many", Strategy::SingleShot),
    )
    .await;
    let done =
        wait_for(&mut alice, &task.id, &[pb::TaskState::Succeeded, pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    assert_eq!(done.strategy(), Strategy::SingleShot);
    assert_eq!(
        done.test_command, "python3 -m unittest discover -s tests -t . -v",
        "detected from the repository"
    );
    let run = run_of(&mut alice, &done).await;
    assert_eq!(done.iterations, 1, "{run:#?}");
    assert!(done.token_usage.unwrap().output_tokens > 0);
    let run = run_of(&mut alice, &done).await;
    use pb::StepKind::*;
    assert_eq!(kinds(&run), [PrepareWorkspace, Generate, Apply, Test, Commit, Publish]);
    assert!(run.steps.iter().all(|s| s.state() == pb::StepState::Succeeded && s.checkpoint.is_some()));
    assert_eq!(platform.model.requests(Role::Coder).len(), 1);
    // The model saw the repository map and the request.
    let first = &platform.model.requests(Role::Coder)[0];
    let prompt = first["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("paging.py\n  paginate") && prompt.contains("one item too many"), "{prompt}");

    let diff = alice
        .get_task_diff(pb::GetTaskDiffRequest { task_id: done.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        diff.content
            .contains("-    return items[start:start + size + 1]\n+    return items[start:start + size]"),
        "{}",
        diff.content
    );
    assert_eq!(diff.files.len(), 1);
    assert_eq!(
        (diff.files[0].path.as_str(), diff.files[0].additions, diff.files[0].deletions),
        ("paging.py", 1, 1)
    );
    assert_eq!(diff.branch, format!("codingagent/{}", done.id));
    assert!(!diff.truncated);
    let patch = alice
        .get_task_diff(pb::GetTaskDiffRequest {
            task_id: done.id.clone(),
            format: pb::DiffFormat::Patch as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        patch.content.starts_with("From ") && patch.content.contains("Subject: [PATCH] Fix paginate()"),
        "{}",
        patch.content
    );
    // The patch applies to the original repository with `git am`.
    let am = std::process::Command::new("git")
        .current_dir(&repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "am"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(patch.content.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(am.success());
    assert!(std::fs::read_to_string(repo.join("paging.py")).unwrap().contains("items[start:start + size]\n"));
    platform.stop().await;
}

#[tokio::test]
async fn iterative_reads_the_failing_test_output_and_succeeds_on_the_second_iteration() {
    let platform = Platform::start(|_| {}).await;
    platform
        .model
        .answer(Role::Coder, fixtures::PAGING_WRONG)
        .answer(Role::Coder, fixtures::PAGING_FIX_AFTER_WRONG);
    let mut alice = platform.orchestration.user("alice").await;
    let task =
        create(&mut alice, task_request(&fixtures::paging(), "Fix paginate()", Strategy::Iterative)).await;
    let done =
        wait_for(&mut alice, &task.id, &[pb::TaskState::Succeeded, pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    assert_eq!(done.iterations, 2);
    let second = &platform.model.last_messages(Role::Coder)[1];
    assert!(
        second.contains("the tests failed (iteration 1 of 5)") && second.contains("test_first_page"),
        "{second}"
    );
    let run = run_of(&mut alice, &done).await;
    use pb::StepKind::*;
    assert_eq!(
        kinds(&run),
        [PrepareWorkspace, Generate, Apply, Test, Generate, Apply, Test, Commit, Publish]
    );
    assert_eq!(run.steps[3].state(), pb::StepState::Failed);
    assert_eq!((run.steps[3].iteration, run.steps[6].iteration), (1, 2));
    // The test output is in the log, as the sandbox printed it.
    let log = log_text(&mut alice, &task.id).await;
    assert!(log.contains("FAIL: test_first_page"), "{log}");
    platform.stop().await;
}

#[tokio::test]
async fn a_mismatched_block_and_a_malformed_answer_are_reported_back_and_recovered_from() {
    let platform = Platform::start(|_| {}).await;
    platform
        .model
        .answer(Role::Coder, fixtures::PAGING_MISMATCH)
        .answer(Role::Coder, "I believe the function is fine as it is.")
        .answer(Role::Coder, "ACTION: open paging.py\nACTION: search start + size")
        .answer(Role::Coder, fixtures::PAGING_FIX);
    let mut alice = platform.orchestration.user("alice").await;
    let task =
        create(&mut alice, task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot)).await;
    let done =
        wait_for(&mut alice, &task.id, &[pb::TaskState::Succeeded, pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    let said = platform.model.last_messages(Role::Coder);
    assert_eq!(said.len(), 4);
    assert!(
        said[1].contains("could not be applied")
            && said[1].contains("4 |     return items[start:start + size + 1]"),
        "{}",
        said[1]
    );
    assert!(said[2].contains("no edit and no tool call"), "{}", said[2]);
    assert!(
        said[3].contains("[open paging.py 1]")
            && said[3].contains("    4 |     return items[start:start + size + 1]"),
        "{}",
        said[3]
    );
    assert!(said[3].contains("paging.py:4:"), "search hits with line numbers: {}", said[3]);
    let log = log_text(&mut alice, &task.id).await;
    assert!(log.contains("edit rejected") && log.contains("malformed answer"), "{log}");
    platform.stop().await;
}

/// The reviewer's requested revision of the docstring.
const DOC_AGAIN: &str = "paging.py\n<<<<<<< SEARCH\n    \"\"\"The items of page `page` (pages start at 0), `size` per page.\"\"\"\n=======\n    \"\"\"The items of page `page` (pages start at 0), `size` items per page.\"\"\"\n>>>>>>> REPLACE\n";

#[tokio::test]
async fn multi_agent_records_planner_coder_reviewer_and_tester_steps_and_plan_items() {
    let platform = Platform::start(|_| {}).await;
    let plan = r#"{"items": [{"title": "fix the slice end", "description": "paginate() returns size + 1 items", "files": ["paging.py"]}, {"title": "document the page numbering", "description": "say pages start at 0", "files": ["paging.py"]}]}"#;
    let doc = "paging.py\n<<<<<<< SEARCH\n    \"\"\"The items of page `page` (from 0), `size` per page.\"\"\"\n=======\n    \"\"\"The items of page `page` (pages start at 0), `size` per page.\"\"\"\n>>>>>>> REPLACE\n";
    platform
        .model
        .answer(Role::Planner, plan)
        .answer(Role::Coder, fixtures::PAGING_FIX)
        .answer(Role::Reviewer, "APPROVE\nThe slice is right now.")
        .answer(Role::Coder, doc)
        .answer(Role::Reviewer, "REJECT\nAlso mention the size.")
        .answer(Role::Coder, DOC_AGAIN)
        .answer(Role::Reviewer, "APPROVE");
    let mut alice = platform.orchestration.user("alice").await;
    let task = create(
        &mut alice,
        task_request(&fixtures::paging(), "Fix paginate() and document it", Strategy::MultiAgent),
    )
    .await;
    let done =
        wait_for(&mut alice, &task.id, &[pb::TaskState::Succeeded, pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    let run = run_of(&mut alice, &done).await;
    use pb::StepKind::*;
    assert_eq!(
        kinds(&run),
        [
            PrepareWorkspace,
            Plan,
            Generate,
            Apply,
            Review,
            Generate,
            Apply,
            Review,
            Generate,
            Apply,
            Review,
            Test,
            Commit,
            Publish
        ]
    );
    assert_eq!(run.plan_items.len(), 2);
    assert_eq!(run.plan_items[0].title, "fix the slice end");
    assert!(run.plan_items.iter().all(|i| i.state() == pb::PlanItemState::Done), "{:?}", run.plan_items);
    assert_eq!(run.plan_items[0].files, ["paging.py"]);
    let reviewed = &platform.model.last_messages(Role::Reviewer)[0];
    assert!(
        reviewed.contains("fix the slice end") && reviewed.contains("+    return items[start:start + size]"),
        "{reviewed}"
    );
    let coder = platform.model.last_messages(Role::Coder);
    assert!(coder[2].contains("Also mention the size"), "the rejection reached the coder: {}", coder[2]);
    platform.stop().await;
}

#[tokio::test]
async fn failures_are_recorded_with_their_reason() {
    let platform = Platform::start(|_| {}).await;
    let mut alice = platform.orchestration.user("alice").await;
    // Single shot with a wrong change: the tests fail and so does the task.
    platform.model.answer(Role::Coder, fixtures::PAGING_WRONG);
    let task =
        create(&mut alice, task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot)).await;
    let failed =
        wait_for(&mut alice, &task.id, &[pb::TaskState::Failed, pb::TaskState::Succeeded], RUN_TIMEOUT).await;
    let failure = failed.failure.clone().unwrap();
    assert_eq!(failure.reason(), pb::TaskFailureReason::TestsFailed, "{failure:?}");
    // A flood of output is cut in the middle; its end, with the runner's summary, is logged.
    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let mut request = task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot);
    request.test_command = "seq 1 300000; echo 'FAILED (failures=1)'; exit 1".into();
    let task = create(&mut alice, request).await;
    wait_for(&mut alice, &task.id, &[pb::TaskState::Failed], RUN_TIMEOUT).await;
    let log = crate::harness::lines(&mut alice, &task.id, 0).await;
    assert!(log.iter().any(|l| l.message.contains("bytes omitted")));
    assert!(
        log.iter().any(|l| l.message == "FAILED (failures=1)" && l.source() == pb::LogSource::SandboxStdout)
    );
    assert!(log.len() < 20_000, "the flood was not logged whole: {} lines", log.len());
    // A repository that cannot be cloned fails the run, with the reason in the log.
    let broken = fixtures::paging();
    std::fs::remove_dir_all(broken.join(".git/objects")).unwrap();
    std::fs::create_dir_all(broken.join(".git/objects")).unwrap();
    let task = create(&mut alice, task_request(&broken, "Fix paginate()", Strategy::SingleShot)).await;
    let failed = wait_for(&mut alice, &task.id, &[pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(failed.failure.unwrap().reason(), pb::TaskFailureReason::RepositoryUnavailable);
    assert!(log_text(&mut alice, &task.id).await.contains("cannot clone"));
    // An iteration budget of one ends an iterative run whose first attempt fails.
    platform.model.answer(Role::Coder, fixtures::PAGING_WRONG);
    let mut request = task_request(&fixtures::paging(), "Fix paginate()", Strategy::Iterative);
    request.budget = Some(pb::TaskBudget { max_iterations: 1, ..Default::default() });
    let task = create(&mut alice, request).await;
    let failed = wait_for(&mut alice, &task.id, &[pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(failed.failure.unwrap().reason(), pb::TaskFailureReason::IterationsExhausted);
    platform.stop().await;
}

#[tokio::test]
async fn a_prompt_too_long_for_the_model_is_asked_again_shorter() {
    let platform = Platform::start(|_| {}).await;
    // The local model server's recorded answer to a prompt beyond its 4,096 tokens.
    let exceeded = include_str!("../../../llm/tests/fixtures/openai/error_context_exceeded.json");
    platform
        .model
        .answer(Role::Coder, fixtures::PAGING_WRONG)
        .fail(Role::Coder, 400, exceeded)
        .answer(Role::Coder, fixtures::PAGING_FIX_AFTER_WRONG);
    let mut alice = platform.orchestration.user("alice").await;
    let task =
        create(&mut alice, task_request(&fixtures::paging(), "Fix paginate()", Strategy::Iterative)).await;
    let done =
        wait_for(&mut alice, &task.id, &[pb::TaskState::Succeeded, pb::TaskState::Failed], RUN_TIMEOUT).await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    let sizes: Vec<usize> = platform
        .model
        .requests(Role::Coder)
        .iter()
        .map(|r| r["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 3);
    assert!(sizes[2] < sizes[1], "the retry was shorter: {sizes:?}");
    assert!(
        log_text(&mut alice, &task.id).await.contains("asking again with only the request and the last turn")
    );
    platform.stop().await;
}
