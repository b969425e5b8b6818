//! Durable execution: a worker process killed with SIGKILL in the middle of a run (sandbox
//! included, nothing released) is replaced by another worker that resumes the run.

use crate::double::Role;
use crate::fixtures;
use crate::harness::{Platform, create, lines, log_text, task_request, wait_for};
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use std::time::{Duration, Instant};

const WORKER_DATABASE: &str = "ORCHESTRATION_TEST_WORKER_DATABASE";
const WORKER_LLM: &str = "ORCHESTRATION_TEST_WORKER_LLM";
const WORKER_WORKSPACES: &str = "ORCHESTRATION_TEST_WORKER_WORKSPACES";

#[tokio::test]
async fn a_run_whose_worker_dies_is_resumed_elsewhere_without_repeating_completed_steps() {
    // The first replica serves the API only; a worker in its own process does the work
    // until it is killed.
    let platform = Platform::start(|c| c.worker.concurrency = 0).await;
    let config = &platform.orchestration.config;
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "resume::worker_process", "--ignored", "--nocapture"])
        .env(WORKER_DATABASE, config.database.url.expose())
        .env(WORKER_LLM, &config.llm.endpoint)
        .env(WORKER_WORKSPACES, &config.worker.workspace_root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let mut alice = platform.orchestration.user("alice").await;
    let mut request = task_request(&fixtures::paging(), "Fix paginate()", Strategy::SingleShot);
    request.test_command = "echo testing; sleep 3; python3 -m unittest discover -s tests -t .".into();
    let task = create(&mut alice, request).await;
    wait_for(&mut alice, &task.id, &[pb::TaskState::Validating], Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_text(&mut alice, &task.id).await.contains("testing") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rescuer = platform.orchestration.replica(|c| c.worker.concurrency = 1).await;
    let crashed_at = chrono::Utc::now();
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();

    let done = wait_for(
        &mut alice,
        &task.id,
        &[pb::TaskState::Succeeded, pb::TaskState::Failed],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    let run = alice
        .get_run(pb::GetRunRequest { run_id: done.current_run_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(run.resume_count, 1);
    use pb::StepKind::*;
    let steps: Vec<(pb::StepKind, pb::StepState)> = run.steps.iter().map(|s| (s.kind(), s.state())).collect();
    use pb::StepState::*;
    assert_eq!(
        steps,
        [
            (PrepareWorkspace, Succeeded),
            (Generate, Succeeded),
            (Apply, Succeeded),
            (Test, Interrupted),
            (Test, Succeeded),
            (Commit, Succeeded),
            (Publish, Succeeded)
        ],
        "only the interrupted step ran twice"
    );
    assert_eq!(platform.model.requests(Role::Coder).len(), 1, "the model was not asked again");
    // The log: contiguous seqs, no line twice, and the resumption said so.
    let log = lines(&mut alice, &task.id, 0).await;
    let seqs: Vec<i64> = log.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>());
    let resumed =
        log.iter().find(|l| l.message.starts_with("run resumed by worker")).expect("a resumption line");
    // How soon is a benchmark goal (docs/BENCHMARKS.md), not an assertion; it is printed.
    let resumed_at = codingagent_proto::helpers::to_chrono(resumed.time.as_ref().unwrap()).unwrap();
    eprintln!("resumed {:?} after the crash", (resumed_at - crashed_at).to_std().unwrap_or_default());
    // The diff is the model's change, applied once.
    let diff = alice
        .get_task_diff(pb::GetTaskDiffRequest { task_id: done.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(diff.files.iter().map(|f| (f.additions, f.deletions)).collect::<Vec<_>>(), [(1, 1)]);
    rescuer.stop().await;
    platform.stop().await;
}

/// The worker process of the test above: an orchestration replica on the test's database,
/// running until it is killed. Without the test's environment it does nothing.
#[tokio::test]
#[ignore = "started (and killed) by a_run_whose_worker_dies_is_resumed_elsewhere_without_repeating_completed_steps"]
async fn worker_process() {
    let Ok(url) = std::env::var(WORKER_DATABASE) else { return };
    use codingagent_kernel::config::Secret;
    let mut config = codingagent_orchestration::Config::default();
    config.server.listen_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.database.url = Secret::new(url);
    config.redis.url = Secret::new(codingagent_testkit::redis_url());
    config.kafka.bootstrap_servers = codingagent_testkit::kafka_bootstrap();
    config.kafka.topic_prefix = codingagent_testkit::TOPIC_PREFIX.into();
    config.allow_local_repositories = true;
    config.worker.concurrency = 1;
    config.worker.lease_secs = 3;
    config.worker.poll_ms = 200;
    config.worker.workspace_root = std::env::var(WORKER_WORKSPACES).unwrap().into();
    config.llm.endpoint = std::env::var(WORKER_LLM).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    codingagent_orchestration::serve(config, listener, codingagent_kernel::CancellationToken::new())
        .await
        .unwrap();
}
