//! Who may see and change what, and precise errors for bad input.

use crate::harness::{Llm, Setup, fresh_prompt, options, user_message};
use crate::ollama::{MODEL, chunk, done, mount_chat, ndjson, ollama_with_model};
use codingagent_llm::config::CloudModelAccess;
use codingagent_proto::codingagent::llm::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_second_user_cannot_see_or_change_what_is_not_theirs() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("x"), done("stop", 3, 1)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    let mut bob = llm.user("bob").await;
    let mut ops = llm.operator().await;
    let generate = pb::GenerateOnceRequest {
        messages: fresh_prompt("hi"),
        model: MODEL.into(),
        options: options(0.5, 8),
        ..Default::default()
    };
    alice.generate_once(generate).await.unwrap();

    // Usage: bob sees none of alice's records and may not ask for them.
    assert!(bob.list_usage(pb::ListUsageRequest::default()).await.unwrap().into_inner().records.is_empty());
    let denied = bob
        .list_usage(pb::ListUsageRequest { user_id: "alice".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = bob
        .get_usage_summary(pb::GetUsageSummaryRequest { user_id: "*".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let all = ops
        .list_usage(pb::ListUsageRequest { user_id: "*".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(all.len(), 1, "operators see everyone's usage");

    // Budgets: one's own, yes; another's or a provider's, no; setting, operators only.
    let alices = pb::BudgetSubject { subject: Some(pb::budget_subject::Subject::UserId("alice".into())) };
    let denied = bob.get_budget(pb::GetBudgetRequest { subject: Some(alices.clone()) }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let set =
        pb::SetBudgetRequest { subject: Some(alices), monthly_token_limit: 1_000_000, ..Default::default() };
    assert_eq!(bob.set_budget(set).await.unwrap_err().code(), Code::PermissionDenied);

    // A/B tests: ids name nothing to users who may not see them.
    let test = pb::AbTest {
        name: format!("private-{}", uuid::Uuid::new_v4()),
        variants: vec![
            pb::AbVariant { id: "a".into(), model: MODEL.into(), weight: 1 },
            pb::AbVariant { id: "b".into(), model: MODEL.into(), weight: 1 },
        ],
        ..Default::default()
    };
    let denied = bob
        .create_ab_test(pb::CreateAbTestRequest { ab_test: Some(test.clone()), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let id = ops
        .create_ab_test(pb::CreateAbTestRequest { ab_test: Some(test), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .ab_test
        .unwrap()
        .id;
    assert_eq!(
        bob.get_ab_test(pb::GetAbTestRequest { ab_test_id: id.clone() }).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        bob.get_ab_test_results(pb::GetAbTestResultsRequest { ab_test_id: id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let outcome = pb::RecordAbOutcomeRequest {
        ab_test_id: id.clone(),
        subject_id: "s".into(),
        success: true,
        ..Default::default()
    };
    assert_eq!(bob.record_ab_outcome(outcome).await.unwrap_err().code(), Code::NotFound);
    let stop = pb::StopAbTestRequest { ab_test_id: id.clone(), ..Default::default() };
    assert_eq!(bob.stop_ab_test(stop).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(
        bob.assign_variant(pb::AssignVariantRequest { ab_test_id: id, subject_id: "s".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Registry administration.
    assert_eq!(
        bob.sync_registry(pb::SyncRegistryRequest::default()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let delete = pb::DeleteModelRequest { model_id: MODEL.into(), ..Default::default() };
    assert_eq!(bob.delete_model(delete).await.unwrap_err().code(), Code::PermissionDenied);
    llm.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_with_every_field_named() {
    let llm = Llm::start(Setup::default(), ollama_with_model().await).await;
    let mut alice = llm.user("alice").await;

    let empty = alice.generate_once(pb::GenerateOnceRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(fields(&empty), ["messages"]);

    let absurd = pb::GenerateOnceRequest {
        messages: vec![user_message("hi")],
        model: "no-provider-prefix".into(),
        options: Some(pb::GenerationOptions {
            temperature: Some(3.0),
            max_tokens: Some(-5),
            top_p: Some(1.5),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = alice.generate_once(absurd).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["options.temperature", "options.top_p", "options.max_tokens", "model"]);

    let embed = alice
        .embed(pb::EmbedRequest { inputs: vec![String::new()], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(fields(&embed), ["inputs[0]"]);

    let negative =
        alice.list_usage(pb::ListUsageRequest { page_size: -1, ..Default::default() }).await.unwrap_err();
    assert_eq!(fields(&negative), ["page_size"]);
    let garbage = alice
        .list_models(pb::ListModelsRequest { page_token: "not-a-token".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(fields(&garbage), ["page_token"]);

    let malformed = alice.get_ab_test(pb::GetAbTestRequest { ab_test_id: "42".into() }).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let unknown = llm
        .operator()
        .await
        .get_ab_test(pb::GetAbTestRequest { ab_test_id: uuid::Uuid::new_v4().to_string() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let bad_test = pb::AbTest {
        name: String::new(),
        variants: vec![pb::AbVariant { id: "a".into(), model: "ollama/missing".into(), weight: 0 }],
        ..Default::default()
    };
    let status = llm
        .operator()
        .await
        .create_ab_test(pb::CreateAbTestRequest { ab_test: Some(bad_test), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(
        fields(&status),
        ["ab_test.name", "ab_test.variants", "ab_test.variants[0].weight", "ab_test.variants[0].model"]
    );
    llm.stop().await;
}

#[tokio::test]
async fn model_listing_paginates() {
    let llm = Llm::start(Setup { local: true, ..Setup::default() }, ollama_with_model().await).await;
    let mut alice = llm.user("alice").await;
    let first = alice
        .list_models(pb::ListModelsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.models.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let second = alice
        .list_models(pb::ListModelsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.models.len(), 1);
    assert_ne!(second.models[0].id, first.models[0].id);
    assert!(second.next_page_token.is_empty(), "two models, two pages");
    llm.stop().await;
}

/// The real local model server, registered as a cloud provider.
const CLOUD: &str = "cloud/gemma-3-270m";

fn cloud_call() -> pb::GenerateOnceRequest {
    pb::GenerateOnceRequest {
        messages: fresh_prompt("Say hello"),
        model: CLOUD.into(),
        options: options(0.5, 2),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_operators_may_pick_a_cloud_model_unless_configured_otherwise() {
    let setup = Setup { cloud_fallback: true, ..Setup::default() };
    let llm = Llm::start(setup, wiremock::MockServer::start().await).await;
    let mut alice = llm.user("alice").await;
    let denied = alice.generate_once(cloud_call()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(denied.get_error_details().error_info().unwrap().reason, "CLOUD_MODEL_NOT_ALLOWED");
    let embed = pb::EmbedRequest { model: CLOUD.into(), inputs: vec!["x".into()], ..Default::default() };
    assert_eq!(alice.embed(embed).await.unwrap_err().code(), Code::PermissionDenied);
    let select = pb::SelectModelRequest { model: CLOUD.into(), ..Default::default() };
    assert_eq!(alice.select_model(select).await.unwrap_err().code(), Code::PermissionDenied);
    llm.operator().await.generate_once(cloud_call()).await.unwrap();
    llm.stop().await;

    let everyone = Setup {
        cloud_fallback: true,
        configure: Some(|c| c.routing.explicit_cloud_models = CloudModelAccess::Everyone),
        ..Setup::default()
    };
    let llm = Llm::start(everyone, wiremock::MockServer::start().await).await;
    llm.user("alice").await.generate_once(cloud_call()).await.unwrap();
    llm.stop().await;

    let nobody = Setup {
        cloud_fallback: true,
        configure: Some(|c| c.routing.explicit_cloud_models = CloudModelAccess::Nobody),
        ..Setup::default()
    };
    let llm = Llm::start(nobody, wiremock::MockServer::start().await).await;
    let denied = llm.operator().await.generate_once(cloud_call()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "not even operators: {denied:?}");
    llm.stop().await;
}

#[tokio::test]
async fn a_cached_answer_never_tells_one_user_what_another_asked() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("cached"), done("stop", 5, 1)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let (mut alice, mut bob) = (llm.user("alice").await, llm.user("bob").await);
    let prompt = fresh_prompt("what is in the quarterly report?");
    let deterministic = || pb::GenerateOnceRequest {
        messages: prompt.clone(),
        model: MODEL.into(),
        options: options(0.0, 16),
        ..Default::default()
    };
    let hit = |response: pb::GenerateOnceResponse| response.result.unwrap().cache_hit;

    assert!(!hit(alice.generate_once(deterministic()).await.unwrap().into_inner()));
    assert!(
        hit(alice.generate_once(deterministic()).await.unwrap().into_inner()),
        "alice's repeat is cached"
    );
    assert!(!hit(bob.generate_once(deterministic()).await.unwrap().into_inner()), "bob's first ask is not");
    assert_eq!(llm.ollama_calls("/api/chat").await, 2, "bob's ask reached the provider");
    assert!(hit(bob.generate_once(deterministic()).await.unwrap().into_inner()), "bob's own repeat is");
    llm.stop().await;
}

#[tokio::test]
async fn control_characters_in_any_free_text_are_invalid_argument() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("x"), done("stop", 3, 1)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    let mut ops = llm.operator().await;
    let invalid = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        fields(&status)
    };

    let nul = pb::GenerateOnceRequest {
        messages: vec![user_message("hello\0world")],
        model: MODEL.into(),
        options: options(0.5, 8),
        ..Default::default()
    };
    assert_eq!(invalid(alice.generate_once(nul).await.unwrap_err()), ["messages[0].content"]);
    assert_eq!(llm.ollama_calls("/api/chat").await, 0, "nothing reached the provider");

    let message = |role: pb::Role, content: &str, name: &str| pb::ChatMessage {
        role: role as i32,
        content: content.into(),
        name: name.into(),
    };
    let everywhere = pb::GenerateRequest {
        messages: vec![
            message(pb::Role::System, "be\u{1}brief", ""),
            message(pb::Role::Tool, "42", "calc\0"),
        ],
        model: "ollama/qwen\0".into(),
        options: Some(pb::GenerationOptions { stop: vec!["\u{3}".into()], ..Default::default() }),
        task_id: "task\0".into(),
        ab_subject_id: "subject\u{7f}".into(),
        ..Default::default()
    };
    assert_eq!(
        invalid(alice.generate(everywhere).await.unwrap_err()),
        ["messages[0].content", "messages[1].name", "options.stop[0]", "model", "task_id", "ab_subject_id"]
    );
    let embed = pb::EmbedRequest { inputs: vec!["fn\0".into()], task_id: "t\0".into(), ..Default::default() };
    assert_eq!(invalid(alice.embed(embed).await.unwrap_err()), ["inputs[0]", "task_id"]);
    let select =
        pb::SelectModelRequest { task_id: "t\0".into(), ab_subject_id: "s\0".into(), ..Default::default() };
    assert_eq!(invalid(alice.select_model(select).await.unwrap_err()), ["task_id", "ab_subject_id"]);
    let usage = pb::ListUsageRequest { model: "m\0".into(), task_id: "t\0".into(), ..Default::default() };
    assert_eq!(invalid(alice.list_usage(usage).await.unwrap_err()), ["model", "task_id"]);
    let nul_user = pb::BudgetSubject { subject: Some(pb::budget_subject::Subject::UserId("bo\0b".into())) };
    let budget =
        pb::SetBudgetRequest { subject: Some(nul_user), monthly_token_limit: 1, ..Default::default() };
    assert_eq!(invalid(ops.set_budget(budget).await.unwrap_err()), ["subject.user_id"]);
    let test = pb::AbTest {
        name: "name\0".into(),
        description: "about\u{2}".into(),
        variants: vec![
            pb::AbVariant { id: "a\0".into(), model: MODEL.into(), weight: 1 },
            pb::AbVariant { id: "b".into(), model: MODEL.into(), weight: 1 },
        ],
        ..Default::default()
    };
    let create = pb::CreateAbTestRequest { ab_test: Some(test), request_id: "r\0".into() };
    assert_eq!(
        invalid(ops.create_ab_test(create).await.unwrap_err()),
        ["ab_test.name", "ab_test.description", "ab_test.variants[0].id", "request_id"]
    );
    let outcome = pb::RecordAbOutcomeRequest {
        ab_test_id: uuid::Uuid::new_v4().to_string(),
        subject_id: "s\0".into(),
        request_id: "r\0".into(),
        ..Default::default()
    };
    assert_eq!(invalid(ops.record_ab_outcome(outcome).await.unwrap_err()), ["subject_id", "request_id"]);
    llm.stop().await;
}
