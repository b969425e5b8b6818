//! Task RPCs: validation, ownership, the state machine's refusals, quotas and paging.

use crate::fixtures;
use crate::harness::{Platform, create, task_request, wait_for};
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use prost::Message;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// The code of a call that must fail.
fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.unwrap_err().code()
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_every_field() {
    let platform = Platform::start(|_| {}).await;
    let mut alice = platform.orchestration.user("alice").await;
    let repo = fixtures::paging();
    let mut request = task_request(&repo, &"x".repeat(32_001), Strategy::SingleShot);
    request.title = "two\nlines".into();
    request.labels = vec!["ok".into(), "not ok".into()];
    request.budget = Some(pb::TaskBudget { max_tokens: -1, max_iterations: 51, max_wall_time: None });
    request.repository.as_mut().unwrap().base_branch = "a..b".into();
    request.test_command = "make\0test".into();
    request.strategy = 42;
    let status = alice.create_task(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = violations(&status);
    for field in [
        "text",
        "title",
        "labels[1]",
        "budget.max_tokens",
        "budget.max_iterations",
        "repository.base_branch",
        "test_command",
        "strategy",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}");
    }

    for (location, field) in [
        (pb::repository::Location::GitUrl("file:///etc".into()), "repository.git_url"),
        (
            pb::repository::Location::GitUrl("https://169.254.169.254/latest/meta-data".into()),
            "repository.git_url",
        ),
        (pb::repository::Location::LocalPath("relative/path".into()), "repository.local_path"),
        (pb::repository::Location::LocalPath("/nonexistent/repository".into()), "repository.local_path"),
    ] {
        let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
        request.repository.as_mut().unwrap().location = Some(location);
        let status = alice.create_task(request).await.unwrap_err();
        assert_eq!((status.code(), violations(&status)), (Code::InvalidArgument, vec![field.to_owned()]));
    }
    let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
    request.repository = None;
    assert_eq!(violations(&alice.create_task(request).await.unwrap_err()), ["repository"]);

    // An unknown model override is refused up front by asking the llm service.
    let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
    request.model = "scripted/no-such-model".into();
    let status = alice.create_task(request).await.unwrap_err();
    assert_eq!((status.code(), violations(&status)), (Code::InvalidArgument, vec!["model".to_owned()]));

    // A repository of the github service needs that service; local paths need the setting.
    let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
    request.repository.as_mut().unwrap().location =
        Some(pb::repository::Location::RepositoryId("repo-1".into()));
    assert_eq!(code(alice.create_task(request).await), Code::FailedPrecondition);
    let strict = platform.orchestration.replica(|c| c.allow_local_repositories = false).await;
    let status = strict
        .user("alice")
        .await
        .create_task(task_request(&repo, "Fix paginate()", Strategy::SingleShot))
        .await;
    assert_eq!(code(status), Code::FailedPrecondition);
    strict.stop().await;

    // Malformed ids, cursors and enum values name their field on every RPC that takes them.
    let bad = |status: tonic::Status| (status.code(), violations(&status));
    let field = |name: &str| (Code::InvalidArgument, vec![name.to_owned()]);
    assert_eq!(
        bad(alice.get_task(pb::GetTaskRequest { task_id: "nope".into() }).await.unwrap_err()),
        field("task_id")
    );
    assert_eq!(
        bad(alice.get_run(pb::GetRunRequest { run_id: "".into() }).await.unwrap_err()),
        field("run_id")
    );
    let stream = pb::StreamTaskLogsRequest {
        task_id: uuid::Uuid::nil().to_string(),
        after_seq: -1,
        ..Default::default()
    };
    assert_eq!(bad(alice.stream_task_logs(stream).await.unwrap_err()), field("after_seq"));
    let stream = pb::StreamTaskLogsRequest {
        task_id: uuid::Uuid::nil().to_string(),
        min_level: 9,
        ..Default::default()
    };
    assert_eq!(bad(alice.stream_task_logs(stream).await.unwrap_err()), field("min_level"));
    assert_eq!(
        bad(alice
            .watch_tasks(pb::WatchTasksRequest { after_seq: -1, ..Default::default() })
            .await
            .unwrap_err()),
        field("after_seq")
    );
    let watch = pb::WatchTasksRequest { task_ids: vec!["x".into()], ..Default::default() };
    assert_eq!(bad(alice.watch_tasks(watch).await.unwrap_err()), field("task_ids[0]"));
    let diff =
        pb::GetTaskDiffRequest { task_id: uuid::Uuid::nil().to_string(), format: 7, ..Default::default() };
    assert_eq!(bad(alice.get_task_diff(diff).await.unwrap_err()), field("format"));
    let cancel = pb::CancelTaskRequest {
        task_id: uuid::Uuid::nil().to_string(),
        reason: "x".repeat(1_001),
        ..Default::default()
    };
    assert_eq!(bad(alice.cancel_task(cancel).await.unwrap_err()), field("reason"));
    // A well-formed id nobody has is NOT_FOUND, like someone else's.
    let unknown = pb::GetTaskRequest { task_id: uuid::Uuid::now_v7().to_string() };
    assert_eq!(alice.get_task(unknown).await.unwrap_err().code(), Code::NotFound);

    // A user may not create tasks for someone else.
    let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
    request.on_behalf_of = "bob".into();
    assert_eq!(alice.create_task(request).await.unwrap_err().code(), Code::PermissionDenied);
    platform.stop().await;
}

#[tokio::test]
async fn zero_budgets_take_the_defaults_and_a_retry_cannot_exceed_the_total() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut alice = platform.orchestration.user("alice").await;
    let repo = fixtures::paging();
    let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
    request.budget = Some(pb::TaskBudget { max_tokens: 0, max_iterations: 0, max_wall_time: None });
    request.total_budget =
        Some(pb::TaskBudget { max_tokens: 250_000, max_iterations: 6, max_wall_time: None });
    let task = create(&mut alice, request).await;
    let defaults = &platform.orchestration.config.budgets;
    assert_eq!(task.budget.as_ref().unwrap().max_tokens, defaults.default_run_tokens);
    assert_eq!(task.budget.as_ref().unwrap().max_iterations, defaults.default_run_iterations);
    assert_eq!(task.total_budget.as_ref().unwrap().max_iterations, 6);

    let task = wait_for(&mut alice, &task.id, &[pb::TaskState::Queued], Duration::from_secs(10)).await;
    alice
        .cancel_task(pb::CancelTaskRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap();
    // The total allows 6 iterations and nothing ran: 7 is more than is left.
    let status = alice
        .retry_task(pb::RetryTaskRequest {
            task_id: task.id.clone(),
            budget: Some(pb::TaskBudget { max_iterations: 7, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), violations(&status)),
        (Code::InvalidArgument, vec!["budget.max_iterations".to_owned()])
    );
    let retried = alice
        .retry_task(pb::RetryTaskRequest {
            task_id: task.id.clone(),
            budget: Some(pb::TaskBudget { max_iterations: 6, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!((retried.state(), retried.run_count), (pb::TaskState::Queued, 2));
    platform.stop().await;
}

#[tokio::test]
async fn a_second_user_cannot_see_stream_update_delete_cancel_or_retry_the_task() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut alice = platform.orchestration.user("alice").await;
    let mut bob = platform.orchestration.user("bob").await;
    let repo = fixtures::paging();
    let task = create(&mut alice, task_request(&repo, "Fix paginate()", Strategy::SingleShot)).await;
    let id = task.id.clone();
    assert_eq!(code(bob.get_task(pb::GetTaskRequest { task_id: id.clone() }).await), Code::NotFound);
    assert_eq!(
        code(
            bob.stream_task_logs(pb::StreamTaskLogsRequest { task_id: id.clone(), ..Default::default() })
                .await
        ),
        Code::NotFound
    );
    let update = pb::UpdateTaskRequest {
        task_id: id.clone(),
        title: "mine now".into(),
        update_mask: Some(prost_types::FieldMask { paths: vec!["title".into()] }),
        ..Default::default()
    };
    assert_eq!(code(bob.update_task(update.clone()).await), Code::NotFound);
    assert_eq!(
        code(bob.cancel_task(pb::CancelTaskRequest { task_id: id.clone(), ..Default::default() }).await),
        Code::NotFound
    );
    assert_eq!(
        code(bob.retry_task(pb::RetryTaskRequest { task_id: id.clone(), ..Default::default() }).await),
        Code::NotFound
    );
    assert_eq!(
        code(bob.delete_task(pb::DeleteTaskRequest { task_id: id.clone(), ..Default::default() }).await),
        Code::NotFound
    );
    assert_eq!(
        code(bob.list_runs(pb::ListRunsRequest { task_id: id.clone(), ..Default::default() }).await),
        Code::NotFound
    );
    assert_eq!(
        code(bob.get_task_diff(pb::GetTaskDiffRequest { task_id: id.clone(), ..Default::default() }).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            bob.search_task_logs(pb::SearchTaskLogsRequest {
                task_id: id.clone(),
                query: "created".into(),
                ..Default::default()
            })
            .await
        ),
        Code::NotFound
    );
    let queued = wait_for(&mut alice, &id, &[pb::TaskState::Queued], Duration::from_secs(10)).await;
    assert_eq!(
        code(bob.get_run(pb::GetRunRequest { run_id: queued.current_run_id.clone() }).await),
        Code::NotFound
    );
    let listed = bob.list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner();
    assert!(listed.tasks.is_empty());
    // Bob may not list everyone's tasks; an operator may, and may read and cancel but not change.
    assert_eq!(
        code(bob.list_tasks(pb::ListTasksRequest { all_owners: true, ..Default::default() }).await),
        Code::PermissionDenied
    );
    let mut ops = platform.orchestration.operator().await;
    let all = ops
        .list_tasks(pb::ListTasksRequest { all_owners: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.tasks.len(), 1);
    ops.get_task(pb::GetTaskRequest { task_id: id.clone() }).await.unwrap();
    assert_eq!(code(ops.update_task(update.clone()).await), Code::NotFound);
    let cancelled = ops
        .cancel_task(pb::CancelTaskRequest {
            task_id: id.clone(),
            reason: "runaway".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cancelled.into_inner().task.unwrap().state(), pb::TaskState::Cancelled);
    platform.stop().await;
}

#[tokio::test]
async fn updates_only_before_a_run_starts_and_deletes_only_when_finished() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut alice = platform.orchestration.user("alice").await;
    let repo = fixtures::paging();
    let task = create(
        &mut alice,
        task_request(&repo, "Fix paginate()\nIt returns one item too many.", Strategy::SingleShot),
    )
    .await;
    assert_eq!(task.title, "Fix paginate()");
    let updated = alice
        .update_task(pb::UpdateTaskRequest {
            task_id: task.id.clone(),
            title: "Fix the paging off-by-one".into(),
            labels: vec!["bug".into(), "paging".into()],
            update_mask: Some(prost_types::FieldMask { paths: vec!["title".into(), "labels".into()] }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!((updated.title.as_str(), updated.labels.len()), ("Fix the paging off-by-one", 2));
    assert_eq!(updated.text, task.text, "fields outside the mask are kept");
    let bad_mask = alice
        .update_task(pb::UpdateTaskRequest {
            task_id: task.id.clone(),
            update_mask: Some(prost_types::FieldMask { paths: vec!["owner".into()] }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&bad_mask), ["update_mask.paths[0]"]);
    let status = alice
        .delete_task(pb::DeleteTaskRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "an unfinished task cannot be deleted");

    // Labels filter the list; a finished task can be deleted and is gone at once.
    let listed = alice
        .list_tasks(pb::ListTasksRequest { label: "paging".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks.len(), 1);
    alice
        .cancel_task(pb::CancelTaskRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap();
    let again = alice
        .cancel_task(pb::CancelTaskRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(
        again.into_inner().task.unwrap().state(),
        pb::TaskState::Cancelled,
        "cancelling twice is harmless"
    );
    let after_cancel = alice
        .update_task(pb::UpdateTaskRequest {
            task_id: task.id.clone(),
            title: "late".into(),
            update_mask: Some(prost_types::FieldMask { paths: vec!["title".into()] }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(after_cancel.code(), Code::FailedPrecondition);
    let deleted = alice
        .delete_task(pb::DeleteTaskRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert!(deleted.into_inner().purge_time.is_some());
    assert_eq!(
        alice.get_task(pb::GetTaskRequest { task_id: task.id.clone() }).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(alice.list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner().tasks.is_empty());
    platform.stop().await;
}

#[tokio::test]
async fn the_eleventh_execution_within_an_hour_is_refused_with_retry_info() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut carol = platform.orchestration.user("carol").await;
    let repo = fixtures::paging();
    for i in 0..10 {
        create(&mut carol, task_request(&repo, &format!("Fix paginate() #{i}"), Strategy::SingleShot)).await;
    }
    let status =
        carol.create_task(task_request(&repo, "Fix paginate() #11", Strategy::SingleShot)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > Duration::from_secs(3_000) && retry <= Duration::from_secs(3_600), "{retry:?}");
    let quota = carol.get_user_quota(pb::GetUserQuotaRequest {}).await.unwrap().into_inner();
    assert_eq!(quota.executions_per_hour.map(|q| (q.used, q.limit)), Some((10, 10)));
    // Operators see the queue on /metrics (refreshed every 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = platform.orchestration.metrics().await;
        if metrics.contains("codingagent_orchestration_runs_queued{service_name=\"orchestration\"} 10") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Another user is not affected.
    let mut dave = platform.orchestration.user("dave").await;
    create(&mut dave, task_request(&repo, "Fix paginate()", Strategy::SingleShot)).await;
    platform.stop().await;
}

#[tokio::test]
async fn lists_page_newest_first_and_filter_by_state_and_repository() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut erin = platform.orchestration.user("erin").await;
    let (one, two) = (fixtures::paging(), fixtures::paging());
    let mut ids = Vec::new();
    for i in 0..5 {
        let repo = if i % 2 == 0 { &one } else { &two };
        ids.push(create(&mut erin, task_request(repo, &format!("Task {i}"), Strategy::SingleShot)).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = erin
            .list_tasks(pb::ListTasksRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids, "every task once, newest first");
    let on_one = erin
        .list_tasks(pb::ListTasksRequest {
            repository: one.to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(on_one.tasks.len(), 3);
    let page = erin
        .list_tasks(pb::ListTasksRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let reused = erin
        .list_tasks(pb::ListTasksRequest {
            page_size: 1,
            page_token: page.next_page_token,
            label: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&reused), ["page_token"], "a token belongs to its query");
    let status =
        erin.list_tasks(pb::ListTasksRequest { states: vec![0], ..Default::default() }).await.unwrap_err();
    assert_eq!(violations(&status), ["states[0]"]);
    assert_eq!(
        erin.list_tasks(pb::ListTasksRequest { page_size: -1, ..Default::default() })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    platform.stop().await;
}

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_creates_one_task() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut frank = platform.orchestration.user("frank").await;
    let repo = fixtures::paging();
    let mut request = task_request(&repo, "Fix paginate()", Strategy::SingleShot);
    request.request_id = "0b8f6c1e-3f0a-4c57-9d1e-5f7d2f0c9a11".into();
    let first = create(&mut frank, request.clone()).await;
    let second = create(&mut frank, request.clone()).await;
    assert_eq!(first.encode_to_vec(), second.encode_to_vec());
    request.text = "Something else".into();
    assert_eq!(violations(&frank.create_task(request).await.unwrap_err()), ["request_id"]);
    assert_eq!(frank.list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner().tasks.len(), 1);
    platform.stop().await;
}
