//! Budgets hold under concurrency: every call reserves its estimated tokens before it reaches a
//! provider and gives them back once its real usage is recorded, also when it fails or its
//! client goes away.

use crate::harness::{Llm, Setup, fresh_prompt, options};
use crate::ollama::{MODEL, chunk, done, mount_chat, ndjson, ollama_with_model};
use codingagent_proto::codingagent::llm::v1 as pb;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// A prompt of 47 characters (`parallel [<uuid>]`), about 12 tokens, with 16 output tokens at
/// most: a call reserves about 28 tokens, so a budget of 40 fits one call and not two.
const BUDGET_FOR_ONE: i64 = 40;

/// The real local model server, registered as a cloud provider.
const CLOUD: &str = "cloud/gemma-3-270m";

fn call(text: &str) -> pb::GenerateOnceRequest {
    pb::GenerateOnceRequest {
        messages: fresh_prompt(text),
        model: MODEL.into(),
        options: options(0.5, 16),
        ..Default::default()
    }
}

async fn set_user_budget(llm: &Llm, user: &str, limit: i64) {
    let budget = pb::SetBudgetRequest {
        subject: Some(pb::BudgetSubject { subject: Some(pb::budget_subject::Subject::UserId(user.into())) }),
        monthly_token_limit: limit,
        ..Default::default()
    };
    llm.operator().await.set_budget(budget).await.unwrap();
}

#[tokio::test]
async fn parallel_calls_cannot_all_pass_a_budget_that_fits_one() {
    let ollama = ollama_with_model().await;
    // Slow answers keep the first call in flight while the others ask to be admitted.
    mount_chat(&ollama, ndjson(&[chunk("ok"), done("stop", 20, 5)]).set_delay(Duration::from_millis(500)))
        .await;
    let llm = Llm::start(Default::default(), ollama).await;
    set_user_budget(&llm, "dave", BUDGET_FOR_ONE).await;
    let dave = llm.user("dave").await;

    let calls = (0..5).map(|_| {
        let mut dave = dave.clone();
        async move { dave.generate_once(call("parallel")).await }
    });
    let results = futures::future::join_all(calls).await;
    let codes: Vec<Code> =
        results.iter().map(|r| r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        1,
        "only the call that fits is let through: {codes:?}"
    );
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(refused.get_error_details().error_info().unwrap().reason, "BUDGET_EXHAUSTED");
    }
    assert_eq!(llm.ollama_calls("/api/chat").await, 1, "refused calls never reach the provider");
    llm.stop().await;
}

#[tokio::test]
async fn a_failed_call_gives_its_reservation_back() {
    let ollama = ollama_with_model().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(serde_json::json!({"error": "runner crashed"})),
        )
        .up_to_n_times(1)
        .mount(&ollama)
        .await;
    mount_chat(&ollama, ndjson(&[chunk("ok"), done("stop", 10, 2)])).await;
    let llm = Llm::start(Default::default(), ollama).await;
    set_user_budget(&llm, "erin", BUDGET_FOR_ONE).await;
    let mut erin = llm.user("erin").await;

    let failed = erin.generate_once(call("fails")).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    // Still holding the first call's reservation, this one would not fit.
    erin.generate_once(call("works")).await.unwrap();
    assert_eq!(llm.ollama_calls("/api/chat").await, 2);
    llm.stop().await;
}

#[tokio::test]
async fn a_call_abandoned_before_its_provider_answers_gives_its_reservation_back() {
    let ollama = ollama_with_model().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ndjson(&[chunk("late"), done("stop", 10, 2)]).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .mount(&ollama)
        .await;
    mount_chat(&ollama, ndjson(&[chunk("ok"), done("stop", 10, 2)])).await;
    let llm = Llm::start(Default::default(), ollama).await;
    set_user_budget(&llm, "fred", BUDGET_FOR_ONE).await;
    let mut fred = llm.user("fred").await;

    // The client gives up while the provider has not answered yet.
    let mut abandoned = fred.clone();
    let waiting = tokio::spawn(async move { abandoned.generate_once(call("abandoned")).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while llm.ollama_calls("/api/chat").await == 0 {
        assert!(Instant::now() < deadline, "the first call never reached the provider");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiting.abort();

    // Its reservation is given back: a call that only fits without it is let through.
    loop {
        match fred.generate_once(call("after")).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "the abandoned call still holds its reservation");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    llm.stop().await;
}

#[tokio::test]
async fn every_call_to_a_cloud_provider_is_held_to_its_budget() {
    // The cloud provider is the default, so calls reach it without a fallback.
    let setup = Setup { cloud_fallback: true, default_model: CLOUD.into(), ..Setup::default() };
    let llm = Llm::start(setup, wiremock::MockServer::start().await).await;
    let mut ops = llm.operator().await;
    let mut alice = llm.user("alice").await;
    let cloud = || pb::BudgetSubject { subject: Some(pb::budget_subject::Subject::Provider("cloud".into())) };
    let limit = |monthly_token_limit| pb::SetBudgetRequest {
        subject: Some(cloud()),
        monthly_token_limit,
        ..Default::default()
    };
    let generate = || pb::GenerateOnceRequest {
        messages: fresh_prompt("Say hello"),
        options: options(0.5, 4),
        ..Default::default()
    };

    ops.set_budget(limit(1_000_000)).await.unwrap();
    let result = alice.generate_once(generate()).await.unwrap().into_inner().result.unwrap();
    assert_eq!(result.provider, "cloud");
    let budget = ops.get_budget(pb::GetBudgetRequest { subject: Some(cloud()) }).await.unwrap().into_inner();
    assert!(budget.budget.unwrap().used_tokens > 0, "the call is charged to the provider");

    ops.set_budget(limit(1)).await.unwrap();
    let refused = alice.generate_once(generate()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.get_error_details().error_info().unwrap().reason, "BUDGET_EXHAUSTED");
    let embed =
        pb::EmbedRequest { model: CLOUD.into(), inputs: vec!["fn main() {}".into()], ..Default::default() };
    let refused = ops.embed(embed).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "embeddings count too: {refused:?}");
    llm.stop().await;
}
