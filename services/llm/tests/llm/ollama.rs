//! The Ollama provider against an HTTP double replaying Ollama's documented payloads.

use crate::harness::{Llm, Setup, fresh_prompt, options};
use codingagent_proto::codingagent::llm::v1 as pb;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) const MODEL: &str = "ollama/qwen2.5-coder:7b";

/// `/api/tags`, `/api/show` and `/api/ps` for one installed, loaded 7.6B model.
pub(crate) async fn ollama_with_model() -> MockServer {
    let server = MockServer::start().await;
    let details = json!({"format": "gguf", "family": "qwen2", "families": ["qwen2"], "parameter_size": "7.6B", "quantization_level": "Q4_K_M"});
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"models": [{
            "name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "modified_at": "2025-01-01T00:00:00Z",
            "size": 4_683_087_332_i64, "digest": "2b0496514337a3d5", "details": details
        }]})))
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/api/show"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "details": details, "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
            "capabilities": ["completion", "tools"]
        })))
        .mount(&server).await;
    Mock::given(method("GET")).and(path("/api/ps"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"models": [{
            "name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "size": 5_137_025_024_i64, "digest": "2b0496514337a3d5",
            "details": details, "expires_at": "2099-01-01T00:00:00Z", "size_vram": 5_137_025_024_i64
        }]})))
        .mount(&server).await;
    server
}

/// An NDJSON body of `/api/chat` chunks.
pub(crate) fn ndjson(lines: &[serde_json::Value]) -> ResponseTemplate {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    ResponseTemplate::new(200).set_body_raw(body, "application/x-ndjson")
}

pub(crate) fn chunk(text: &str) -> serde_json::Value {
    json!({"model": "qwen2.5-coder:7b", "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": text}, "done": false})
}

pub(crate) fn done(reason: &str, prompt: i64, eval: i64) -> serde_json::Value {
    json!({"model": "qwen2.5-coder:7b", "created_at": "2025-01-01T00:00:01Z", "message": {"role": "assistant", "content": ""},
           "done": true, "done_reason": reason, "total_duration": 5_589_157_167_i64, "prompt_eval_count": prompt, "eval_count": eval})
}

pub(crate) async fn mount_chat(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST")).and(path("/api/chat")).respond_with(response).mount(server).await;
}

/// Collects a Generate stream: the text, the final result, or the status it ended with.
pub(crate) async fn generate(
    client: &mut crate::harness::Client,
    request: pb::GenerateRequest,
) -> (String, Result<pb::GenerationResult, tonic::Status>) {
    let mut text = String::new();
    let mut stream = match client.generate(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (text, Err(status)),
    };
    let mut last_seq = 0;
    loop {
        match stream.message().await {
            Ok(Some(item)) => {
                assert_eq!(item.seq, last_seq + 1, "sequence numbers have no gaps");
                last_seq = item.seq;
                text.push_str(&item.text_delta);
                if let Some(result) = item.result {
                    return (text, Ok(result));
                }
            }
            Ok(None) => return (text, Err(tonic::Status::unknown("stream ended without a result"))),
            Err(status) => return (text, Err(status)),
        }
    }
}

fn request(model: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        messages: fresh_prompt("reverse a string in Rust"),
        model: model.into(),
        options: options(0.2, 64),
        ..Default::default()
    }
}

#[tokio::test]
async fn streams_chunks_in_order_and_records_the_reported_usage() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("Hel"), chunk("lo"), chunk("!"), done("stop", 26, 3)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;

    let (text, result) = generate(&mut alice, request(MODEL)).await;
    let result = result.unwrap();
    assert_eq!(text, "Hello!");
    assert_eq!(result.usage.unwrap().input_tokens, 26);
    assert_eq!(result.usage.unwrap().output_tokens, 3);
    assert_eq!(result.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!((result.model.as_str(), result.provider.as_str()), (MODEL, "ollama"));
    assert_eq!(result.selection_reason, pb::SelectionReason::Explicit as i32);

    let records = alice.list_usage(pb::ListUsageRequest::default()).await.unwrap().into_inner().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, result.usage_record_id);
    assert_eq!(records[0].usage.unwrap().output_tokens, 3);
    assert_eq!(records[0].outcome, pb::CallOutcome::Success as i32);
    llm.stop().await;
}

#[tokio::test]
async fn done_reason_length_is_reported() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("fn"), done("length", 10, 1)])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let (_, result) = generate(&mut llm.user("alice").await, request(MODEL)).await;
    assert_eq!(result.unwrap().finish_reason, pb::FinishReason::Length as i32);
    llm.stop().await;
}

#[tokio::test]
async fn an_error_mid_stream_ends_it_unavailable_after_the_text_already_sent() {
    let ollama = ollama_with_model().await;
    mount_chat(
        &ollama,
        ndjson(&[
            chunk("partial "),
            chunk("answer"),
            json!({"error": "model runner has unexpectedly stopped"}),
        ]),
    )
    .await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let mut alice = llm.user("alice").await;
    let (text, result) = generate(&mut alice, request(MODEL)).await;
    assert_eq!(text, "partial answer");
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
    // The failed call is still on the books.
    let records = alice.list_usage(pb::ListUsageRequest::default()).await.unwrap().into_inner().records;
    assert_eq!(records[0].outcome, pb::CallOutcome::Error as i32);
    llm.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_is_not_mistaken_for_a_complete_answer() {
    let ollama = ollama_with_model().await;
    mount_chat(&ollama, ndjson(&[chunk("half an ans")])).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let (text, result) = generate(&mut llm.user("alice").await, request(MODEL)).await;
    assert_eq!(text, "half an ans");
    assert_eq!(result.unwrap_err().code(), Code::Unavailable);
    llm.stop().await;
}

#[tokio::test]
async fn unknown_models_are_not_found_with_the_available_ones_listed() {
    let ollama = ollama_with_model().await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let (_, result) = generate(&mut llm.user("alice").await, request("ollama/llama9:400b")).await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "MODEL_NOT_FOUND");
    assert!(info.metadata["available"].contains(MODEL), "{info:?}");

    // A model the registry knows but Ollama no longer has: Ollama's 404 becomes NOT_FOUND.
    mount_chat(
        &llm.ollama,
        ResponseTemplate::new(404).set_body_json(json!({"error": "model 'qwen2.5-coder:7b' not found"})),
    )
    .await;
    let (_, result) = generate(&mut llm.user("alice").await, request(MODEL)).await;
    assert_eq!(result.unwrap_err().code(), Code::NotFound);
    llm.stop().await;
}

#[tokio::test]
async fn the_registry_reflects_what_ollama_reports() {
    let llm = Llm::start(Setup::default(), ollama_with_model().await).await;
    let models = llm
        .user("alice")
        .await
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .models;
    let model = models.iter().find(|m| m.id == MODEL).expect("synced from /api/tags");
    assert_eq!(model.parameter_count, 7_600_000_000);
    assert_eq!(model.context_length, 32_768);
    assert_eq!(model.quantization, "Q4_K_M");
    assert!(model.loaded, "from /api/ps");
    llm.stop().await;
}

#[tokio::test]
async fn pulls_stream_progress_to_operators_only() {
    let ollama = ollama_with_model().await;
    Mock::given(method("POST")).and(path("/api/pull"))
        .respond_with(ndjson(&[
            json!({"status": "pulling manifest"}),
            json!({"status": "pulling 2b0496514337", "digest": "sha256:2b0496514337", "total": 4_683_087_332_i64, "completed": 1_000_000}),
            json!({"status": "pulling 2b0496514337", "digest": "sha256:2b0496514337", "total": 4_683_087_332_i64, "completed": 4_683_087_332_i64}),
            json!({"status": "verifying sha256 digest"}),
            json!({"status": "writing manifest"}),
            json!({"status": "success"}),
        ]))
        .mount(&ollama).await;
    let llm = Llm::start(Setup::default(), ollama).await;
    let pull = pb::PullModelRequest { name: "qwen2.5-coder:7b".into(), ..Default::default() };

    let refused = llm.user("alice").await.pull_model(pull.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut stream = llm.operator().await.pull_model(pull).await.unwrap().into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        items.push(item);
    }
    assert_eq!(items.first().unwrap().status, "pulling manifest");
    let progress: Vec<i64> = items.iter().filter(|i| i.total_bytes > 0).map(|i| i.completed_bytes).collect();
    assert_eq!(progress, [1_000_000, 4_683_087_332]);
    let last = items.last().unwrap();
    assert_eq!(last.model.as_ref().unwrap().id, MODEL, "the pulled model is in the registry");
    llm.stop().await;
}

#[tokio::test]
async fn a_fresh_machine_pulls_the_model_its_hardware_runs_well() {
    let ollama = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"models": []})))
        .mount(&ollama)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/pull"))
        .respond_with(ndjson(&[json!({"status": "pulling manifest"}), json!({"status": "success"})]))
        .mount(&ollama)
        .await;
    let llm = Llm::start(Setup { pull_default: true, ..Setup::default() }, ollama).await;
    let size = codingagent_llm::hardware::Hardware::detect().recommended_size();
    let expected = llm.config.ollama.as_ref().unwrap().default_models[size.label()].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pulls: Vec<serde_json::Value> = llm
            .ollama
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/api/pull")
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect();
        if let Some(pull) = pulls.first() {
            assert_eq!(pull["model"], expected, "the {} class model", size.label());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no pull was requested");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    llm.stop().await;
}

#[tokio::test]
async fn a_restarted_service_routes_with_its_last_registry_while_ollama_is_unreachable() {
    let llm = Llm::start(Setup::default(), ollama_with_model().await).await;
    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&down)
        .await;
    let llm = llm.restart(down).await;
    let mut alice = llm.user("alice").await;
    let models = alice.list_models(pb::ListModelsRequest::default()).await.unwrap().into_inner().models;
    assert!(models.iter().any(|m| m.id == MODEL), "the snapshot in PostgreSQL survives the restart");
    let sync =
        llm.operator().await.sync_registry(pb::SyncRegistryRequest::default()).await.unwrap().into_inner();
    let ollama = sync.providers.iter().find(|p| p.provider == "ollama").unwrap();
    assert!(!ollama.ok && !ollama.error_message.is_empty());
    assert_eq!(ollama.model_count, 1, "a failing provider keeps its models");
    llm.stop().await;
}
