//! Live logs and task watches: exact resumption, following a run on another replica,
//! cancellation reaching a running step, and searching a log.

use crate::double::Role;
use crate::fixtures;
use crate::harness::{Client, Platform, create, lines, log_text, task_request, wait_for};
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use pb::stream_task_logs_response::Item;
use std::time::{Duration, Instant};
use tonic::Code;

/// Reads a live log stream to its end: (lines, final state).
async fn follow(client: &mut Client, id: &str, after_seq: i64) -> (Vec<pb::LogLine>, pb::TaskState) {
    let request = pb::StreamTaskLogsRequest { task_id: id.into(), after_seq, ..Default::default() };
    let mut stream = client.stream_task_logs(request).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(item) =
        tokio::time::timeout_at(deadline.into(), stream.message()).await.expect("the stream ends").unwrap()
    {
        match item.item {
            Some(Item::Line(line)) => seen.push(line),
            Some(Item::End(end)) => return (seen, end.state()),
            _ => {}
        }
    }
    panic!("the stream closed without an end item");
}

/// A test command that takes a while, so a run is still going when the test looks at it.
const SLOW_TESTS: &str =
    "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.25; done; python3 -m unittest discover -s tests -t .";

#[tokio::test]
async fn a_stream_on_another_replica_follows_the_run_and_a_resumed_stream_gets_exactly_the_rest() {
    let platform = Platform::start(|_| {}).await;
    // Replica B runs no workers: everything it streams was written by replica A.
    let b = platform.orchestration.replica(|c| c.worker.concurrency = 0).await;
    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let mut on_a = platform.orchestration.user("alice").await;
    let mut on_b = b.user("alice").await;
    let mut request = task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot);
    request.test_command = SLOW_TESTS.into();
    let task = create(&mut on_a, request).await;
    let (streamed, end) = follow(&mut on_b, &task.id, 0).await;
    assert_eq!(end, pb::TaskState::Succeeded, "{}", log_text(&mut on_a, &task.id).await);
    let seqs: Vec<i64> = streamed.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "contiguous, no gap, no duplicate");
    assert!(streamed.iter().any(|l| l.message == "tick 8" && l.source() == pb::LogSource::SandboxStdout));
    // The stored log is what the live stream showed, and a stream resumed after any line
    // gets exactly the lines after it.
    let stored = lines(&mut on_b, &task.id, 0).await;
    assert_eq!(
        stored.iter().map(|l| (l.seq, l.message.clone())).collect::<Vec<_>>(),
        streamed.iter().map(|l| (l.seq, l.message.clone())).collect::<Vec<_>>()
    );
    let cut = stored.len() as i64 / 2;
    let (rest, _) = follow(&mut on_b, &task.id, cut).await;
    assert_eq!(
        rest.iter().map(|l| l.seq).collect::<Vec<_>>(),
        ((cut + 1)..=stored.len() as i64).collect::<Vec<_>>()
    );
    // A cursor past the end was never handed out.
    let beyond = pb::StreamTaskLogsRequest {
        task_id: task.id.clone(),
        after_seq: stored.len() as i64 + 1,
        ..Default::default()
    };
    assert_eq!(on_b.stream_task_logs(beyond).await.unwrap_err().code(), Code::OutOfRange);
    b.stop().await;
    platform.stop().await;
}

#[tokio::test]
async fn cancelling_stops_the_running_sandbox_within_a_second() {
    let platform = Platform::start(|_| {}).await;
    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let mut alice = platform.orchestration.user("alice").await;
    let mut request = task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot);
    request.test_command = "echo sandbox-began; sleep 30; echo sandbox-finished".into();
    let task = create(&mut alice, request).await;
    wait_for(&mut alice, &task.id, &[pb::TaskState::Validating], Duration::from_secs(30)).await;
    // Wait until the command really runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines(&mut alice, &task.id, 0).await.iter().any(|l| l.message == "sandbox-began")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    let cancelled = alice
        .cancel_task(pb::CancelTaskRequest {
            task_id: task.id.clone(),
            reason: "wrong repo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cancelled.into_inner().task.unwrap().state(), pb::TaskState::Cancelled);
    let run_id = alice
        .get_task(pb::GetTaskRequest { task_id: task.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .current_run_id;
    loop {
        let run = alice
            .get_run(pb::GetRunRequest { run_id: run_id.clone() })
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap();
        if run.state() == pb::RunState::Cancelled {
            assert!(
                run.steps
                    .iter()
                    .any(|s| s.kind() == pb::StepKind::Test && s.state() == pb::StepState::Interrupted)
            );
            break;
        }
        // Far sooner than the 30 s the command would take; the latency itself is measured in
        // docs/BENCHMARKS.md, not asserted.
        assert!(asked.elapsed() < Duration::from_secs(15), "the run did not stop: {run:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("the run stopped {:?} after CancelTask", asked.elapsed());
    let log = log_text(&mut alice, &task.id).await;
    assert!(log.contains("cancelled by user:alice: wrong repo"), "{log}");
    assert!(!lines(&mut alice, &task.id, 0).await.iter().any(|l| l.message == "sandbox-finished"), "{log}");
    platform.stop().await;
}

#[tokio::test]
async fn watch_streams_the_callers_changes_and_resumes_after_a_seq() {
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let mut alice = platform.orchestration.user("alice").await;
    let mut bob = platform.orchestration.user("bob").await;
    let mut watch = alice.watch_tasks(pb::WatchTasksRequest::default()).await.unwrap().into_inner();
    use pb::watch_tasks_response::Item as W;
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(first.item, Some(W::CaughtUp(pb::WatchCaughtUp { delivered: 0 }))), "{first:?}");
    let task =
        create(&mut alice, task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot)).await;
    create(&mut bob, task_request(&fixtures::paging(), "Bob's task", Strategy::SingleShot)).await;
    let mut states = Vec::new();
    let mut last_seq = 0;
    while states.len() < 3 {
        let item =
            tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        if let Some(W::Change(change)) = item.item {
            let t = change.task.unwrap();
            assert_eq!(t.id, task.id, "bob's task never shows up");
            states.push(t.state());
            last_seq = item.seq;
        }
    }
    assert_eq!(states, [pb::TaskState::Pending, pb::TaskState::Classified, pb::TaskState::Queued]);
    alice
        .cancel_task(pb::CancelTaskRequest { task_id: task.id.clone(), ..Default::default() })
        .await
        .unwrap();
    drop(watch);
    let mut resumed = alice
        .watch_tasks(pb::WatchTasksRequest { after_seq: last_seq, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let item = resumed.message().await.unwrap().unwrap();
    match item.item {
        Some(W::Change(change)) => {
            assert_eq!(change.task.as_ref().unwrap().state(), pb::TaskState::Cancelled);
            assert_eq!(change.previous_state(), pb::TaskState::Queued);
        }
        other => panic!("expected the cancellation, got {other:?}"),
    }
    let status = alice
        .watch_tasks(pb::WatchTasksRequest { after_seq: 1_000_000, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    platform.stop().await;
}

#[tokio::test]
async fn search_finds_the_failing_test_in_the_log() {
    let platform = Platform::start(|_| {}).await;
    platform.model.answer(Role::Coder, fixtures::PAGING_WRONG);
    let mut alice = platform.orchestration.user("alice").await;
    let task =
        create(&mut alice, task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot)).await;
    wait_for(&mut alice, &task.id, &[pb::TaskState::Failed], Duration::from_secs(60)).await;
    let hits = alice
        .search_task_logs(pb::SearchTaskLogsRequest {
            task_id: task.id.clone(),
            query: "test_first_page FAIL".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert!(!hits.is_empty());
    let best = &hits[0];
    assert!(
        best.snippet.contains("\u{2}test_first_page\u{3}") || best.snippet.contains("\u{2}FAIL\u{3}"),
        "{:?}",
        best.snippet
    );
    let empty = alice
        .search_task_logs(pb::SearchTaskLogsRequest {
            task_id: task.id.clone(),
            query: " ".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(empty.unwrap_err().code(), Code::InvalidArgument);
    platform.stop().await;
}
