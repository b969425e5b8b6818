//! Model selection, the cache, budgets, the circuit breaker and the cloud fallback.

use crate::harness::{Llm, Setup, fresh_prompt, options};
use crate::ollama::{MODEL, chunk, done, mount_chat, ndjson, ollama_with_model};
use codingagent_proto::codingagent::common::v1::{Complexity, TaskType, TokenUsage};
use codingagent_proto::codingagent::events::v1::{TaskExecutionSummary, TaskSucceeded};
use codingagent_proto::codingagent::llm::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::TaskClassification;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt;
use wiremock::ResponseTemplate;

fn once(prompt: &[pb::ChatMessage], temperature: f64) -> pb::GenerateOnceRequest {
    pb::GenerateOnceRequest {
        messages: prompt.to_vec(),
        model: MODEL.into(),
        options: options(temperature, 16),
        ..Default::default()
    }
}

#[tokio::test]
async fn deterministic_repeats_hit_the_cache_and_sampled_ones_do_not() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("cached"), done("stop", 5, 1)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    let prompt = fresh_prompt("explain borrowing");

    let first = alice.generate_once(once(&prompt, 0.0)).await.unwrap().into_inner();
    let second = alice.generate_once(once(&prompt, 0.0)).await.unwrap().into_inner();
    assert!(!first.result.unwrap().cache_hit);
    let second_result = second.result.unwrap();
    assert!(second_result.cache_hit);
    assert_eq!(second.text, first.text);
    assert_eq!(second_result.usage.unwrap().output_tokens, 1, "a hit reports the original counts");
    assert_eq!(llm.ollama_calls("/api/chat").await, 1, "the repeat never reached Ollama");

    let warm = fresh_prompt("explain lifetimes");
    for _ in 0..2 {
        let result = alice.generate_once(once(&warm, 0.7)).await.unwrap().into_inner().result.unwrap();
        assert!(!result.cache_hit, "temperature > 0 is never served from the cache");
    }
    assert_eq!(llm.ollama_calls("/api/chat").await, 3);

    let bypass = pb::GenerateOnceRequest { bypass_cache: true, ..once(&prompt, 0.0) };
    assert!(!alice.generate_once(bypass).await.unwrap().into_inner().result.unwrap().cache_hit);
    llm.stop().await;
}

#[tokio::test]
async fn a_user_over_budget_is_refused_before_any_provider_call() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("ok"), done("stop", 20, 5)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    // A call reserves its prompt (about 11 tokens) and its max_tokens (16) before it runs: 30
    // fits the first call, and not a second one after the first was charged 25.
    let budget = pb::SetBudgetRequest {
        subject: Some(pb::BudgetSubject { subject: Some(pb::budget_subject::Subject::UserId("bob".into())) }),
        monthly_token_limit: 30,
        ..Default::default()
    };
    llm.operator().await.set_budget(budget).await.unwrap();
    let mut bob = llm.user("bob").await;
    bob.generate_once(once(&fresh_prompt("first"), 0.5)).await.unwrap();
    assert_eq!(llm.ollama_calls("/api/chat").await, 1);

    let refused = bob.generate_once(once(&fresh_prompt("second"), 0.5)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let details = refused.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "BUDGET_EXHAUSTED");
    assert!(details.retry_info().unwrap().retry_delay.is_some(), "says when the month resets");
    assert_eq!(llm.ollama_calls("/api/chat").await, 1, "no provider call for a refused request");

    let own = bob.get_budget(pb::GetBudgetRequest::default()).await.unwrap().into_inner().budget.unwrap();
    assert_eq!((own.monthly_token_limit, own.used_tokens), (30, 25));
    // Another user is unaffected.
    llm.user("carol").await.generate_once(once(&fresh_prompt("third"), 0.5)).await.unwrap();
    llm.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_falls_back_only_within_budget() {
    let ollama = ollama_with_model().await;
    mount_chat(
        &ollama,
        ResponseTemplate::new(500)
            .set_body_json(serde_json::json!({"error": "llama runner process has terminated"})),
    )
    .await;
    let llm = Llm::start(Setup { cloud_fallback: true, ..Setup::default() }, ollama).await;
    let mut alice = llm.user("alice").await;

    // Two failures open the breaker (threshold 2); each call is still answered by the fallback.
    for _ in 0..2 {
        let result = alice
            .generate_once(once(&fresh_prompt("fallback please"), 0.5))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(result.selection_reason, pb::SelectionReason::Fallback as i32);
        assert_eq!(result.provider, "cloud");
        assert!(result.cost.unwrap().micros > 0, "cloud calls are priced");
    }
    assert_eq!(llm.ollama_calls("/api/chat").await, 2);
    // Open: the next call goes straight to the fallback without trying Ollama.
    alice.generate_once(once(&fresh_prompt("again"), 0.5)).await.unwrap();
    assert_eq!(llm.ollama_calls("/api/chat").await, 2, "an open breaker spares the failing provider");

    // With the cloud provider's budget spent, there is no fallback: UNAVAILABLE with RetryInfo.
    let budget = pb::SetBudgetRequest {
        subject: Some(pb::BudgetSubject {
            subject: Some(pb::budget_subject::Subject::Provider("cloud".into())),
        }),
        monthly_token_limit: 1,
        ..Default::default()
    };
    llm.operator().await.set_budget(budget).await.unwrap();
    let status = alice.generate_once(once(&fresh_prompt("over budget"), 0.5)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
    llm.stop().await;
}

fn features(task_type: TaskType, complexity: Complexity) -> Option<pb::TaskFeatures> {
    Some(pb::TaskFeatures {
        task_type: task_type as i32,
        complexity: complexity as i32,
        ..Default::default()
    })
}

#[tokio::test]
async fn selection_goes_explicit_then_ab_test_then_learned_then_default() {
    let llm = Llm::start(Setup { local: true, ..Setup::default() }, ollama_with_model().await).await;
    let mut ops = llm.operator().await;
    let select = |model: &str, features: Option<pb::TaskFeatures>| pb::SelectModelRequest {
        model: model.into(),
        task_features: features,
        task_id: "task-42".into(),
        ..Default::default()
    };
    let explicit = ops.select_model(select("local/gemma-3-270m", None)).await.unwrap().into_inner();
    assert_eq!(
        (explicit.reason, explicit.model.as_str()),
        (pb::SelectionReason::Explicit as i32, "local/gemma-3-270m")
    );

    let default = ops
        .select_model(select("", features(TaskType::Feature, Complexity::Simple)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.reason, pb::SelectionReason::HardwareDefault as i32);
    assert!(!default.explanation.is_empty());

    // An A/B test on bug fixes takes over for them, deterministically per subject.
    let test = pb::AbTest {
        name: format!("coder-vs-gemma-{}", uuid::Uuid::new_v4()),
        variants: vec![
            pb::AbVariant { id: "control".into(), model: MODEL.into(), weight: 50 },
            pb::AbVariant { id: "gemma".into(), model: "local/gemma-3-270m".into(), weight: 50 },
        ],
        scope: Some(pb::AbTestScope { task_types: vec![TaskType::BugFix as i32], ..Default::default() }),
        ..Default::default()
    };
    let created = ops
        .create_ab_test(pb::CreateAbTestRequest { ab_test: Some(test), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .ab_test
        .unwrap();
    let ab = ops
        .select_model(select("", features(TaskType::BugFix, Complexity::Simple)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ab.reason, ab.ab_test_id.as_str()),
        (pb::SelectionReason::AbTest as i32, created.id.as_str())
    );
    let again = ops
        .select_model(select("", features(TaskType::BugFix, Complexity::Simple)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.ab_variant_id, ab.ab_variant_id, "the same subject keeps its variant");

    // Orchestration's task outcomes arrive over Kafka and teach the learned selector.
    for i in 0..25 {
        let event = TaskSucceeded {
            task_id: format!("learned-{}-{i}", uuid::Uuid::new_v4()),
            summary: Some(TaskExecutionSummary {
                model: "local/gemma-3-270m".into(),
                classification: Some(TaskClassification {
                    task_type: TaskType::Refactor as i32,
                    complexity: Complexity::Complex as i32,
                    ..Default::default()
                }),
                token_usage: Some(TokenUsage { input_tokens: 1_000, output_tokens: 200 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        codingagent_testkit::publish_event(
            &codingagent_testkit::topic(codingagent_kernel::kafka::topics::TASK),
            &event.task_id,
            "codingagent.events.v1.TaskSucceeded",
            prost::Message::encode_to_vec(&event),
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let learned = loop {
        let chosen = ops
            .select_model(select("", features(TaskType::Refactor, Complexity::Complex)))
            .await
            .unwrap()
            .into_inner();
        if chosen.reason == pb::SelectionReason::Learned as i32 || Instant::now() > deadline {
            break chosen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        (learned.reason, learned.model.as_str()),
        (pb::SelectionReason::Learned as i32, "local/gemma-3-270m")
    );
    assert!(learned.expected_success.unwrap() > 0.9);
    llm.stop().await;
}

#[tokio::test]
async fn ab_results_count_outcomes_per_variant_and_stop_promotes_the_winner() {
    let llm = Llm::start(Setup { local: true, ..Setup::default() }, ollama_with_model().await).await;
    let mut ops = llm.operator().await;
    let test = pb::AbTest {
        name: format!("results-{}", uuid::Uuid::new_v4()),
        variants: vec![
            pb::AbVariant { id: "control".into(), model: MODEL.into(), weight: 50 },
            pb::AbVariant { id: "gemma".into(), model: "local/gemma-3-270m".into(), weight: 50 },
        ],
        min_samples_per_variant: 20,
        ..Default::default()
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let create = pb::CreateAbTestRequest { ab_test: Some(test), request_id: request_id.clone() };
    let created = ops.create_ab_test(create.clone()).await.unwrap().into_inner().ab_test.unwrap();
    let retried = ops.create_ab_test(create).await.unwrap().into_inner().ab_test.unwrap();
    assert_eq!(retried.id, created.id, "a retried create with the same request_id creates nothing new");

    // The gemma arm succeeds every time, the control one time in four.
    let mut recorded = 0;
    for subject in 0..200 {
        let subject = format!("subject-{subject}");
        let variant = ops
            .assign_variant(pb::AssignVariantRequest {
                ab_test_id: created.id.clone(),
                subject_id: subject.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .variant
            .unwrap();
        let success = variant.id == "gemma" || recorded % 4 == 0;
        recorded += 1;
        let outcome = pb::RecordAbOutcomeRequest {
            ab_test_id: created.id.clone(),
            subject_id: subject,
            success,
            request_id: format!("r{recorded}"),
            ..Default::default()
        };
        let answered = ops.record_ab_outcome(outcome.clone()).await.unwrap().into_inner();
        assert_eq!(answered.variant_id, variant.id);
        ops.record_ab_outcome(outcome).await.unwrap(); // a retry is counted once
    }
    let results = ops
        .get_ab_test_results(pb::GetAbTestResultsRequest { ab_test_id: created.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .results
        .unwrap();
    assert_eq!(results.variants.iter().map(|v| v.samples).sum::<i64>(), 200);
    let gemma = results.variants.iter().find(|v| v.variant_id == "gemma").unwrap();
    assert_eq!(gemma.verdict, pb::AbVerdict::SignificantlyBetter as i32);
    assert!(gemma.p_value.unwrap() < 0.001);
    assert!(gemma.success_rate_lower > 0.9 && gemma.success_rate_upper <= 1.0);
    assert_eq!(results.leading_variant_id, "gemma");

    let stopped = ops
        .stop_ab_test(pb::StopAbTestRequest {
            ab_test_id: created.id.clone(),
            promote_winner: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let test = stopped.ab_test.unwrap();
    assert_eq!(
        (test.state, test.winner_variant_id.as_str(), test.promoted),
        (pb::AbTestState::Stopped as i32, "gemma", true)
    );
    let chosen = ops.select_model(pb::SelectModelRequest::default()).await.unwrap().into_inner();
    assert_eq!(chosen.model, "local/gemma-3-270m", "the promoted winner is the new default");
    let late = ops
        .assign_variant(pb::AssignVariantRequest { ab_test_id: created.id, subject_id: "late".into() })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    llm.stop().await;
}
