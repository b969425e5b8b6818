//! The remaining RPCs: models, hardware, embeddings through Ollama, usage summaries and A/B
//! listing.

use crate::harness::{Llm, Setup, fresh_prompt, options};
use crate::ollama::{MODEL, chunk, done, mount_chat, ndjson, ollama_with_model};
use codingagent_proto::codingagent::llm::v1 as pb;
use serde_json::json;
use tonic::Code;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn models_can_be_read_and_deleted_by_operators() {
    let ollama = ollama_with_model().await;
    Mock::given(method("DELETE"))
        .and(path("/api/delete"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&ollama)
        .await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    let model = alice
        .get_model(pb::GetModelRequest { model_id: MODEL.into() })
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();
    assert_eq!(model.provider_kind, pb::ProviderKind::Ollama as i32);
    assert_eq!(model.capabilities, [pb::ModelCapability::Chat as i32]);

    llm.operator()
        .await
        .delete_model(pb::DeleteModelRequest { model_id: MODEL.into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(llm.ollama_calls("/api/delete").await, 1);
    let gone = alice.get_model(pb::GetModelRequest { model_id: MODEL.into() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let malformed = alice.get_model(pb::GetModelRequest { model_id: "nope".into() }).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    llm.stop().await;
}

#[tokio::test]
async fn the_hardware_profile_describes_this_machine() {
    let llm = Llm::start(Setup::default(), ollama_with_model().await).await;
    let profile = llm
        .user("alice")
        .await
        .get_hardware_profile(pb::GetHardwareProfileRequest {})
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert!(profile.cpu_cores >= 1);
    assert!(profile.memory_bytes > 0);
    assert!(!profile.recommended_parameter_size.is_empty());
    assert!(profile.recommended_max_parameters > 0);
    assert_eq!(profile.default_model, MODEL, "the only local chat model");
    llm.stop().await;
}

#[tokio::test]
async fn embeddings_go_through_ollama_and_are_recorded() {
    let ollama = ollama_with_model().await;
    Mock::given(method("POST")).and(path("/api/embed"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"model": "qwen2.5-coder:7b", "embeddings": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], "prompt_eval_count": 9})))
        .mount(&ollama).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    let embedded = alice
        .embed(pb::EmbedRequest {
            model: MODEL.into(),
            inputs: vec!["a".into(), "b".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((embedded.embeddings.len(), embedded.dimensions), (2, 3));
    assert_eq!(embedded.embeddings[1].values, [0.4, 0.5, 0.6]);
    assert_eq!(embedded.usage.unwrap().input_tokens, 9);
    let summary = alice.get_usage_summary(pb::GetUsageSummaryRequest::default()).await.unwrap().into_inner();
    assert_eq!(summary.total.unwrap().usage.unwrap().input_tokens, 9);
    llm.stop().await;
}

#[tokio::test]
async fn usage_summaries_total_and_group_the_callers_calls() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("x"), done("stop", 10, 2)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    for _ in 0..3 {
        let request = pb::GenerateOnceRequest {
            messages: fresh_prompt("sum"),
            model: MODEL.into(),
            options: options(0.5, 4),
            ..Default::default()
        };
        alice.generate_once(request).await.unwrap();
    }
    llm.user("bob")
        .await
        .generate_once(pb::GenerateOnceRequest {
            messages: fresh_prompt("bob"),
            model: MODEL.into(),
            options: options(0.5, 4),
            ..Default::default()
        })
        .await
        .unwrap();

    let mine = alice
        .get_usage_summary(pb::GetUsageSummaryRequest {
            group_by: pb::UsageGroupBy::Model as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let total = mine.total.unwrap();
    assert_eq!(total.call_count, 3, "bob's call is not alice's");
    assert_eq!(
        total.usage.unwrap(),
        codingagent_proto::codingagent::common::v1::TokenUsage { input_tokens: 30, output_tokens: 6 }
    );
    assert_eq!(mine.groups.len(), 1);
    assert_eq!(mine.groups[0].key, MODEL);

    let everyone = llm
        .operator()
        .await
        .get_usage_summary(pb::GetUsageSummaryRequest {
            user_id: "*".into(),
            group_by: pb::UsageGroupBy::User as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let users: Vec<&str> = everyone.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);
    let backwards = pb::GetUsageSummaryRequest {
        start_time: Some(prost_types::Timestamp { seconds: 2_000_000_000, nanos: 0 }),
        end_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
        ..Default::default()
    };
    assert_eq!(alice.get_usage_summary(backwards).await.unwrap_err().code(), Code::InvalidArgument);
    llm.stop().await;
}

#[tokio::test]
async fn ab_tests_list_newest_first_filtered_by_state_and_paginated() {
    let llm = Llm::start(Setup { local: true, ..Setup::default() }, ollama_with_model().await).await;
    let mut ops = llm.operator().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let test = pb::AbTest {
            name: format!("list-{i}-{}", uuid::Uuid::new_v4()),
            variants: vec![
                pb::AbVariant { id: "a".into(), model: MODEL.into(), weight: 1 },
                pb::AbVariant { id: "b".into(), model: "local/gemma-3-270m".into(), weight: 1 },
            ],
            ..Default::default()
        };
        ids.push(
            ops.create_ab_test(pb::CreateAbTestRequest { ab_test: Some(test), ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .ab_test
                .unwrap()
                .id,
        );
    }
    ops.stop_ab_test(pb::StopAbTestRequest { ab_test_id: ids[0].clone(), ..Default::default() })
        .await
        .unwrap();

    let first = ops
        .list_ab_tests(pb::ListAbTestsRequest { page_size: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let second = ops
        .list_ab_tests(pb::ListAbTestsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<String> = first.ab_tests.iter().chain(&second.ab_tests).map(|t| t.id.clone()).collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone(), ids[0].clone()], "newest first across pages");
    assert!(second.next_page_token.is_empty());

    let running = ops
        .list_ab_tests(pb::ListAbTestsRequest {
            state: pb::AbTestState::Running as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.ab_tests.len(), 2);
    let denied = llm.user("alice").await.list_ab_tests(pb::ListAbTestsRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    llm.stop().await;
}

#[tokio::test]
async fn a_retried_set_budget_replays_its_first_answer_without_acting_again() {
    let llm = Llm::start(Setup::default(), ollama_with_model().await).await;
    let mut ops = llm.operator().await;
    let subject =
        Some(pb::BudgetSubject { subject: Some(pb::budget_subject::Subject::UserId("dana".into())) });
    let set = |limit: i64, request_id: &str| pb::SetBudgetRequest {
        subject: subject.clone(),
        monthly_token_limit: limit,
        request_id: request_id.into(),
    };
    let first = ops.set_budget(set(100, "r1")).await.unwrap().into_inner();
    ops.set_budget(set(200, "r2")).await.unwrap();
    let retried = ops.set_budget(set(100, "r1")).await.unwrap().into_inner();
    assert_eq!(retried, first, "the retry answers exactly like the first call");
    let now = ops
        .get_budget(pb::GetBudgetRequest { subject: subject.clone() })
        .await
        .unwrap()
        .into_inner()
        .budget
        .unwrap();
    assert_eq!(now.monthly_token_limit, 200, "and changes nothing");
    let bad = ops.set_budget(set(1, &"x".repeat(65))).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    llm.stop().await;
}
