//! The model lifecycle: the shipped model serves on first start, retraining is judged
//! against it, and promotion, rollback and refusal of bad models keep exactly one serving.

use crate::harness::{Classifier, config, violations};
use codingagent_proto::codingagent::classifier::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

async fn serving(client: &mut crate::harness::Client) -> pb::ClassifierModel {
    client
        .get_model(pb::GetModelRequest { model_id: "serving".into() })
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap()
}

async fn classify_vague(client: &mut crate::harness::Client) -> pb::Classification {
    let request = pb::ClassifyRequest {
        text: "the settings page should remember the last tab a user opened".into(),
        disable_llm_stage: true,
        ..Default::default()
    };
    client.classify(request).await.unwrap().into_inner().classification.unwrap()
}

#[tokio::test]
async fn worse_models_are_rejected_promotion_and_rollback_swap_the_serving_model() {
    let (mut config, database) = config().await;
    config.training.seed_on_start = true;
    // Two epochs give a model clearly worse than the shipped one.
    config.training.epochs = 2;
    config.cascade.heuristic_threshold = 1.5;
    let classifier = Classifier::start(config, database).await;
    let mut ops = classifier.operator().await;
    let mut alice = classifier.user("alice").await;

    let shipped = serving(&mut ops).await;
    assert_eq!((shipped.version, shipped.status), (1, pb::ModelStatus::Serving as i32));
    let metrics = shipped.metrics.clone().unwrap();
    assert!(metrics.task_type.as_ref().unwrap().macro_f1 > 0.5, "{metrics:?}");
    assert!(metrics.evaluation_sample_count > 1_000);
    let made = classify_vague(&mut alice).await;
    assert_eq!((made.decided_by, made.model_version.as_str()), (2, shipped.id.as_str()));
    let body = reqwest_model(&classifier).await;
    assert!(body.contains(&shipped.id) && body.contains("\"loaded\":true"), "{body}");

    let denied = alice.retrain(pb::RetrainRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let trained = ops.retrain(pb::RetrainRequest::default()).await.unwrap().into_inner();
    let job = trained.job.unwrap();
    assert_eq!(job.state, pb::TrainingJobState::Succeeded as i32);
    assert!(job.sample_count > 30_000, "{job:?}");
    let worse = trained.candidate.unwrap();
    assert_eq!(worse.status, pb::ModelStatus::Rejected as i32, "{worse:?}");
    assert!(worse.rejection_reason.contains("macro F1"), "{}", worse.rejection_reason);
    assert_eq!(worse.baseline_model_id, shipped.id);
    assert_eq!(serving(&mut ops).await.id, shipped.id, "the shipped model still serves");
    let fetched =
        ops.get_training_job(pb::GetTrainingJobRequest { training_job_id: job.id.clone() }).await.unwrap();
    assert_eq!(fetched.into_inner().job.unwrap().candidate_model_id, worse.id);
    let hidden =
        alice.get_training_job(pb::GetTrainingJobRequest { training_job_id: job.id }).await.unwrap_err();
    assert_eq!(hidden.code(), Code::PermissionDenied);

    let promote = |model_id: &str, allow_rejected: bool| pb::PromoteModelRequest {
        model_id: model_id.into(),
        reason: "test".into(),
        allow_rejected,
        ..Default::default()
    };
    let refused = ops.promote_model(promote(&worse.id, false)).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.get_details_error_info().unwrap().reason.as_str()),
        (Code::FailedPrecondition, "MODEL_REJECTED")
    );
    let promoted = ops.promote_model(promote(&worse.id, true)).await.unwrap().into_inner();
    assert_eq!(promoted.previous_model.unwrap().id, shipped.id);
    assert_eq!(classify_vague(&mut alice).await.model_version, worse.id, "the swap is immediate here");

    let restored = ops.rollback_model(pb::RollbackModelRequest::default()).await.unwrap().into_inner();
    assert_eq!(restored.model.unwrap().id, shipped.id);
    assert_eq!(restored.rolled_back_model.unwrap().id, worse.id);
    assert_eq!(classify_vague(&mut alice).await.model_version, shipped.id);

    // A model whose artifact no longer loads is refused and the serving one stays.
    sqlx::query("UPDATE classifier.models SET artifact = 'garbage' WHERE id = $1::uuid")
        .bind(&worse.id)
        .execute(&classifier.pool)
        .await
        .unwrap();
    let corrupt = ops.promote_model(promote(&worse.id, true)).await.unwrap_err();
    assert_eq!(corrupt.get_details_error_info().unwrap().reason, "MODEL_UNLOADABLE");
    assert_eq!(serving(&mut ops).await.id, shipped.id);
    assert_eq!(classify_vague(&mut alice).await.model_version, shipped.id);

    let unknown = ops.promote_model(promote(&uuid::Uuid::new_v4().to_string(), false)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = ops.get_model(pb::GetModelRequest { model_id: "v1".into() }).await.unwrap_err();
    assert_eq!(violations(&malformed), ["model_id"]);
    let listed = ops.list_models(pb::ListModelsRequest { page_size: 1, ..Default::default() }).await.unwrap();
    let listed = listed.into_inner();
    assert_eq!(listed.models[0].id, worse.id, "newest first");
    assert!(!listed.next_page_token.is_empty());
    classifier.stop().await;
}

async fn reqwest_model(classifier: &Classifier) -> String {
    use codingagent_kernel::identity::{Caller, IDENTITY_HEADER, TokenMinter};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = TokenMinter::new(&classifier.config.identity).mint(&Caller::user("ops")).unwrap();
    let mut stream = tokio::net::TcpStream::connect(classifier.addr).await.unwrap();
    let request =
        format!("GET /model HTTP/1.1\r\nhost: x\r\n{IDENTITY_HEADER}: {token}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn retraining_needs_enough_samples_and_a_sane_request() {
    let classifier = Classifier::plain().await;
    let mut ops = classifier.operator().await;
    let short = ops.retrain(pb::RetrainRequest::default()).await.unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    let failure = short.get_details_precondition_failure().unwrap();
    assert!(failure.violations.iter().any(|v| v.r#type == "SAMPLES" && v.subject == "total"), "{failure:?}");
    assert_eq!(short.get_details_error_info().unwrap().reason, "NOT_ENOUGH_SAMPLES");

    let below_floor = ops
        .retrain(pb::RetrainRequest { min_samples_per_class: 2, holdout_fraction: 0.7, ..Default::default() })
        .await;
    assert_eq!(violations(&below_floor.unwrap_err()), ["min_samples_per_class", "holdout_fraction"]);
    let unknown = ops
        .retrain(pb::RetrainRequest {
            data_snapshot_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let none = ops.get_model(pb::GetModelRequest { model_id: "serving".into() }).await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "nothing serves before the first model");
    classifier.stop().await;
}

#[tokio::test]
async fn a_retried_retrain_returns_its_job_and_trains_once() {
    let (mut config, database) = config().await;
    config.training.seed_on_start = true;
    // Enough work on the seed corpus that the job is still running when the retry arrives.
    config.training.epochs = 20;
    let classifier = Classifier::start(config, database).await;
    let mut ops = classifier.operator().await;
    let request =
        pb::RetrainRequest { request_id: "retrain-once".into(), skip_promotion: true, ..Default::default() };
    let first = tokio::spawn({
        let (mut ops, request) = (ops.clone(), request.clone());
        async move { ops.retrain(request).await }
    });
    let running = loop {
        let running: Option<String> =
            sqlx::query_scalar("SELECT id::text FROM classifier.training_jobs WHERE state = 2")
                .fetch_optional(&classifier.pool)
                .await
                .unwrap();
        if let Some(id) = running {
            break id;
        }
        assert!(!first.is_finished(), "the job ended before it was seen running: {:?}", first.await);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };

    let during = ops.retrain(request.clone()).await.unwrap().into_inner().job.unwrap();
    assert_eq!((during.id.as_str(), during.state), (running.as_str(), pb::TrainingJobState::Running as i32));
    let finished = first.await.unwrap().unwrap().into_inner();
    let job = finished.job.clone().unwrap();
    assert_eq!((job.id.as_str(), job.state), (running.as_str(), pb::TrainingJobState::Succeeded as i32));
    let after = ops.retrain(request).await.unwrap().into_inner();
    assert_eq!(after, finished, "a retry after the job returns the finished job and its candidate");

    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM classifier.training_jobs")
        .fetch_one(&classifier.pool)
        .await
        .unwrap();
    let models: i64 = sqlx::query_scalar("SELECT count(*) FROM classifier.models")
        .fetch_one(&classifier.pool)
        .await
        .unwrap();
    assert_eq!((jobs, models), (1, 2), "one job trained one candidate beside the shipped model");
    classifier.stop().await;
}

#[tokio::test]
async fn one_users_flood_of_feedback_is_capped_in_a_retrain() {
    let (mut config, database) = config().await;
    config.rate_limit_per_minute = 0;
    config.training.min_total_samples = 20;
    // Outcomes of other runs on the shared task topic may add a few samples of any label.
    config.training.min_samples_floor = 1;
    config.training.min_samples_per_class = 1;
    config.training.feedback_per_user = 3;
    config.training.epochs = 30;
    let classifier = Classifier::start(config, database).await;
    // Everyone else's data: 60 rows over three task types and three complexities.
    sqlx::query(
        "INSERT INTO classifier.samples (source, origin, text, task_type, complexity, split) \
         SELECT 1, 'seed-' || g, 'request ' || g || ' about the ' || (ARRAY['login', 'parser', 'billing'])[g % 3 + 1] \
         || ' module', g % 3 + 1, g % 3 + 1, (g % 10) / 10.0 + 0.05 FROM generate_series(1, 60) g",
    )
    .execute(&classifier.pool)
    .await
    .unwrap();
    let correct_all = |user: &'static str, count: usize| {
        let classifier = &classifier;
        async move {
            let mut client = classifier.user(user).await;
            for i in 0..count {
                let text = format!("{user} writes request {i} about the export module");
                let request = pb::ClassifyRequest { text, disable_llm_stage: true, ..Default::default() };
                let made = client.classify(request).await.unwrap().into_inner().classification.unwrap();
                let feedback = pb::SubmitFeedbackRequest {
                    classification_id: made.id,
                    corrected_task_type: 5,
                    corrected_complexity: 1,
                    ..Default::default()
                };
                client.submit_feedback(feedback).await.unwrap();
            }
        }
    };
    correct_all("mallory", 12).await;
    correct_all("alice", 2).await;

    let mut ops = classifier.operator().await;
    let request = pb::RetrainRequest { skip_promotion: true, ..Default::default() };
    let job = ops.retrain(request).await.unwrap().into_inner().job.unwrap();
    let feedback: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.text, count(*) FROM classifier.snapshot_samples x JOIN classifier.samples s ON s.id = x.sample_id \
         WHERE x.snapshot_id = $1::uuid AND s.source = 2 GROUP BY s.text ORDER BY s.text",
    )
    .bind(&job.data_snapshot_id)
    .fetch_all(&classifier.pool)
    .await
    .unwrap();
    let texts: Vec<&str> = feedback.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "alice writes request 0 about the export module",
            "alice writes request 1 about the export module",
            "mallory writes request 10 about the export module",
            "mallory writes request 11 about the export module",
            "mallory writes request 9 about the export module",
        ],
        "the newest three of mallory's twelve corrections and both of alice's"
    );
    classifier.stop().await;
}
