//! The OpenAI-compatible provider against a real model server (llama.cpp serving a small model,
//! started by `./dev`). Assertions are about the protocol — framing, counts, records — never
//! about wording.

use crate::harness::{Llm, Setup, fresh_prompt, options};
use crate::ollama::generate;
use codingagent_proto::codingagent::llm::v1 as pb;
use std::time::Duration;

const LOCAL: &str = "local/gemma-3-270m";

#[tokio::test]
async fn streams_tokens_from_a_real_model_server_with_usage_and_records() {
    let llm =
        Llm::start(Setup { local: true, ..Setup::default() }, wiremock::MockServer::start().await).await;
    let mut alice = llm.user("alice").await;
    let request = pb::GenerateRequest {
        messages: fresh_prompt("Write a haiku about Rust"),
        model: LOCAL.into(),
        options: options(0.8, 8),
        ..Default::default()
    };
    let (text, result) = generate(&mut alice, request).await;
    let result = result.unwrap();
    let usage = result.usage.unwrap();
    assert!(!text.is_empty());
    assert!(usage.input_tokens > 0, "{usage:?}");
    assert!((1..=8).contains(&usage.output_tokens), "max_tokens bounds the output: {usage:?}");
    assert!([pb::FinishReason::Length as i32, pb::FinishReason::Stop as i32].contains(&result.finish_reason));
    assert_eq!(result.provider, "local");
    assert!(result.time_to_first_token.is_some());

    let records = alice.list_usage(pb::ListUsageRequest::default()).await.unwrap().into_inner().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].usage, Some(usage), "the record holds exactly what the server reported");
    assert_eq!(records[0].model, LOCAL);

    // Other services learn of every call through Kafka.
    let id = result.usage_record_id.clone();
    let event = codingagent_testkit::find_record(
        &codingagent_testkit::topic(codingagent_kernel::kafka::topics::LLM),
        move |r| r.key.as_deref() == Some(&id),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let event = event.expect("InferenceCompleted published");
    assert_eq!(event.headers["ce_type"], "codingagent.events.v1.InferenceCompleted");
    assert_eq!(event.headers["ce_source"], "/codingagent/llm");
    let decoded: codingagent_proto::codingagent::events::v1::InferenceCompleted =
        prost::Message::decode(event.payload.as_slice()).unwrap();
    assert_eq!(decoded.record.unwrap().usage, Some(usage));
    llm.stop().await;
}

#[tokio::test]
async fn generate_once_and_embeddings_work_against_the_real_server() {
    let llm =
        Llm::start(Setup { local: true, ..Setup::default() }, wiremock::MockServer::start().await).await;
    let mut alice = llm.user("alice").await;
    let once = pb::GenerateOnceRequest {
        messages: fresh_prompt("Say hello"),
        model: LOCAL.into(),
        options: options(0.0, 6),
        ..Default::default()
    };
    let response = alice.generate_once(once).await.unwrap().into_inner();
    assert!(!response.text.is_empty());
    assert!(response.result.unwrap().usage.unwrap().output_tokens <= 6);

    let embed = pb::EmbedRequest {
        model: LOCAL.into(),
        inputs: vec!["fn main() {}".into(), "def main(): pass".into()],
        ..Default::default()
    };
    let embedded = alice.embed(embed).await.unwrap().into_inner();
    assert_eq!(embedded.embeddings.len(), 2);
    assert!(embedded.dimensions > 0);
    assert!(embedded.embeddings.iter().all(|e| e.values.len() == embedded.dimensions as usize));
    assert!(embedded.usage.unwrap().input_tokens > 0);
    let records = alice.list_usage(pb::ListUsageRequest::default()).await.unwrap().into_inner().records;
    assert_eq!(records.iter().filter(|r| r.kind == pb::CallKind::Embed as i32).count(), 1);
    llm.stop().await;
}
