//! Events of a whole run on Kafka, and the services that learn from them: the llm service
//! (learned model selection, the A/B outcome) and the classifier (training samples).

use crate::double::Role;
use crate::fixtures;
use crate::harness::{Platform, create, log_text, task_request, wait_for};
use codingagent_kernel::CancellationToken;
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::classifier::v1::classifier_service_client::ClassifierServiceClient;
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::events::v1 as events;
use codingagent_proto::codingagent::llm::v1 as llm;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use prost::Message;
use std::time::{Duration, Instant};

/// The task's records on the task topic, in topic order.
async fn records_of(task_id: &str, until_type: &str) -> Vec<codingagent_testkit::Record> {
    let topic = codingagent_testkit::topic("codingagent.task.v1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = codingagent_testkit::read_topic(&topic, usize::MAX, Duration::from_secs(3)).await.unwrap();
        let mine: Vec<_> = all.into_iter().filter(|r| r.key.as_deref() == Some(task_id)).collect();
        if mine.iter().any(|r| r.headers.get("ce_type").map(String::as_str) == Some(until_type))
            || Instant::now() > deadline
        {
            return mine;
        }
    }
}

#[tokio::test]
async fn a_runs_events_arrive_in_order_and_the_llm_and_classifier_learn_from_the_outcome() {
    let platform = Platform::start(|_| {}).await;
    let llm_service = platform.llm.as_ref().unwrap();
    // An A/B test between two arms of the scripted model: the task's model comes from it.
    let mut ops = llm_service.operator().await;
    let ab = ops
        .create_ab_test(llm::CreateAbTestRequest {
            ab_test: Some(llm::AbTest {
                name: "orchestration outcome".into(),
                variants: vec![
                    llm::AbVariant { id: "a".into(), model: "scripted/gemma-3-270m".into(), weight: 1 },
                    llm::AbVariant { id: "b".into(), model: "scripted/gemma-3-270m".into(), weight: 1 },
                ],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ab_test
        .unwrap();
    // A classifier in front of the same Kafka, heuristic and model stages only.
    let database = codingagent_testkit::TestDatabase::create().await.unwrap();
    let shared = codingagent_testkit::sections(&database);
    let mut classifier = codingagent_classifier::Config {
        server: shared.server,
        database: shared.database,
        redis: shared.redis,
        kafka: shared.kafka,
        ..codingagent_classifier::Config::default()
    };
    classifier.task_outcomes_group = codingagent_testkit::unique_name("classifier-orchestration-test");
    classifier.training.seed_on_start = false;
    classifier.rate_limit_per_minute = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let classifier_addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let classifier_task =
        tokio::spawn(codingagent_classifier::serve(classifier.clone(), listener, stop.clone()));
    // Without a trained model the classifier reports NOT_SERVING yet answers with its
    // heuristic; wait until it answers.
    let mut probe = ClassifierServiceClient::new(
        codingagent_testkit::connect_as(classifier_addr, &classifier.identity, &Caller::user("probe")).await,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe
        .get_training_stats(codingagent_proto::codingagent::classifier::v1::GetTrainingStatsRequest {})
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the classifier never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orchestration =
        platform.orchestration.replica(|c| c.classifier.endpoint = format!("http://{classifier_addr}")).await;

    platform.model.answer(Role::Coder, fixtures::PAGING_FIX);
    let mut alice = orchestration.user("alice").await;
    let task = create(
        &mut alice,
        task_request(&fixtures::paging(), "Fix the off-by-one in paginate()", Strategy::SingleShot),
    )
    .await;
    let done = wait_for(
        &mut alice,
        &task.id,
        &[pb::TaskState::Succeeded, pb::TaskState::Failed],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{}", log_text(&mut alice, &task.id).await);
    assert_eq!(done.ab_test_id, ab.id, "the model came from the A/B test");
    let classification = done.classification.clone().unwrap();
    assert!(!classification.classification_id.is_empty(), "classified by the classifier service");

    let records = records_of(&task.id, "codingagent.events.v1.TaskSucceeded").await;
    let types: Vec<&str> =
        records.iter().filter_map(|r| r.headers.get("ce_type").map(String::as_str)).collect();
    let milestones: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| !t.ends_with("TaskStateChanged") && !t.ends_with("TaskStepCompleted"))
        .collect();
    assert_eq!(
        milestones,
        ["TaskCreated", "TaskClassified", "TaskQueued", "TaskStarted", "TaskSucceeded"]
            .map(|t| format!("codingagent.events.v1.{t}")),
        "{types:?}"
    );
    assert_eq!(types.iter().filter(|t| t.ends_with("TaskStepCompleted")).count(), 6);
    let states: Vec<pb::TaskState> = records
        .iter()
        .filter(|r| r.headers.get("ce_type").is_some_and(|t| t.ends_with("TaskStateChanged")))
        .map(|r| events::TaskStateChanged::decode(r.payload.as_slice()).unwrap().state())
        .collect();
    use pb::TaskState::*;
    assert_eq!(states, [Pending, Classified, Queued, Running, Validating, Succeeded]);
    assert!(
        records.windows(2).all(|w| w[0].partition == w[1].partition && w[0].offset < w[1].offset),
        "one partition, in order"
    );
    let succeeded = records.iter().find(|r| r.headers["ce_type"].ends_with("TaskSucceeded")).unwrap();
    let event = events::TaskSucceeded::decode(succeeded.payload.as_slice()).unwrap();
    assert_eq!(event.owner, "alice");
    let summary = event.summary.unwrap();
    assert_eq!(
        (summary.files_changed, summary.lines_added, summary.lines_removed, summary.iterations),
        (1, 1, 1, 1)
    );
    assert_eq!(summary.ab_test_id, ab.id);

    // The llm service learned the outcome and counted it in the A/B test.
    let llm_pool = llm_service.pool().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let learned: Option<bool> =
            sqlx::query_scalar("SELECT success FROM llm.model_outcomes WHERE task_id = $1")
                .bind(&task.id)
                .fetch_optional(&llm_pool)
                .await
                .unwrap();
        if learned == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the llm service never learned the outcome");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let results = ops
        .get_ab_test_results(llm::GetAbTestResultsRequest { ab_test_id: ab.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let counted: i64 = results.results.iter().flat_map(|r| r.variants.iter()).map(|v| v.samples).sum();
    assert_eq!(counted, 1, "{results:?}");

    // The classifier turned it into a training sample tied to the task.
    let classifier_pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM classifier.samples WHERE origin = $1")
            .bind(&task.id)
            .fetch_one(&classifier_pool)
            .await
            .unwrap();
        if samples == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the classifier never made a sample of the outcome");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut classifier_client = ClassifierServiceClient::new(
        codingagent_testkit::connect_as(classifier_addr, &classifier.identity, &Caller::user("alice")).await,
    );
    let stored = classifier_client
        .get_classification(codingagent_proto::codingagent::classifier::v1::GetClassificationRequest {
            classification_id: classification.classification_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .classification
        .unwrap();
    assert_eq!(stored.task_id, task.id);

    orchestration.stop().await;
    stop.cancel();
    let _ = classifier_task.await;
    classifier_pool.close().await;
    database.drop_database().await.unwrap();
    platform.stop().await;
}
