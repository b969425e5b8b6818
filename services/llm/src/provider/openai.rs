//! Any OpenAI-compatible endpoint: `/v1/chat/completions` (server-sent events), `/v1/models`
//! and `/v1/embeddings`. Used for cloud providers and for local servers that speak the same
//! protocol (llama.cpp, vLLM).

use super::framing::sse_data;
use super::{
    ChatEvent, ChatStream, Embeddings, Finish, Kind, Provider, ProviderError, ProviderModel, PullStream,
    http_client, require_done, send, transport,
};
use crate::request::{Prompt, Role};
use codingagent_kernel::config::Secret;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OpenAi {
    name: String,
    base_url: String,
    api_key: Secret,
    cloud: bool,
    http: reqwest::Client,
}

impl OpenAi {
    /// `base_url` ends in `/v1`, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:58080/v1`.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Secret,
        cloud: bool,
        connect: Duration,
        idle: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            cloud,
            http: http_client(connect, idle)?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base_url));
        if self.api_key.is_empty() { builder } else { builder.bearer_auth(self.api_key.expose()) }
    }
}

/// OpenAI answers errors as `{"error": {"message": "...", "code": ...}}`.
async fn check(response: reqwest::Response, model: &str) -> Result<reqwest::Response, ProviderError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message =
        body["error"]["message"].as_str().or_else(|| body["error"].as_str()).unwrap_or(status.as_str());
    let unknown_model =
        message.contains("model") && (message.contains("not found") || message.contains("does not exist"));
    // llama.cpp says `type: exceed_context_size_error`, OpenAI `code: context_length_exceeded`.
    let too_long = body["error"]["type"] == "exceed_context_size_error"
        || body["error"]["code"] == "context_length_exceeded";
    Err(match status.as_u16() {
        404 => ProviderError::ModelNotFound(model.to_owned()),
        400 if unknown_model => ProviderError::ModelNotFound(model.to_owned()),
        400 if too_long => ProviderError::ContextExceeded(message.to_owned()),
        // Rate limits and quota are the provider's trouble, not the request's.
        429 => ProviderError::Unavailable(message.to_owned()),
        400..=499 => ProviderError::Rejected(message.to_owned()),
        _ => ProviderError::Unavailable(message.to_owned()),
    })
}

fn chat_body(model: &str, prompt: &Prompt) -> Value {
    let messages: Vec<Value> = prompt
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut message = json!({ "role": role, "content": m.content });
            if let Some(name) = &m.name {
                message["name"] = json!(name);
            }
            message
        })
        .collect();
    let o = &prompt.options;
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(t) = o.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = o.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(m) = o.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if !o.stop.is_empty() {
        body["stop"] = json!(o.stop);
    }
    if let Some(s) = o.seed {
        body["seed"] = json!(s);
    }
    if o.json {
        body["response_format"] = json!({ "type": "json_object" });
    }
    body
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
}

/// Turns SSE payloads into events. The finish reason arrives on the last choice chunk and the
/// usage on a separate final chunk (with `include_usage`), so `Done` is emitted at `[DONE]`
/// carrying both.
fn events(
    payloads: impl futures::Stream<Item = Result<String, ProviderError>> + Send + 'static,
) -> ChatStream {
    let events = async_stream::stream! {
        let mut payloads = std::pin::pin!(payloads);
        let mut finish = None;
        let mut usage = None;
        while let Some(payload) = payloads.next().await {
            let payload = match payload {
                Ok(payload) => payload,
                Err(error) => { yield Err(error); return; }
            };
            if payload == "[DONE]" {
                let Usage { prompt_tokens, completion_tokens } = usage.unwrap_or(Usage { prompt_tokens: 0, completion_tokens: 0 });
                yield Ok(ChatEvent::Done { finish: finish.unwrap_or(Finish::Stop), input_tokens: prompt_tokens, output_tokens: completion_tokens });
                return;
            }
            let value: Value = match serde_json::from_str(&payload) {
                Ok(value) => value,
                Err(error) => {
                    yield Err(ProviderError::Stream(format!("malformed chunk: {error}")));
                    return;
                }
            };
            if let Some(error) = value.get("error") {
                let message = error["message"].as_str().or_else(|| error.as_str()).unwrap_or("the provider failed mid-stream");
                yield Err(ProviderError::Stream(message.to_owned()));
                return;
            }
            let chunk: Chunk = match serde_json::from_value(value) {
                Ok(chunk) => chunk,
                Err(error) => {
                    yield Err(ProviderError::Stream(format!("malformed chunk: {error}")));
                    return;
                }
            };
            usage = chunk.usage.or(usage);
            for choice in chunk.choices {
                if let Some(reason) = choice.finish_reason {
                    finish = Some(match reason.as_str() {
                        "length" => Finish::Length,
                        "content_filter" => Finish::ContentFilter,
                        _ => Finish::Stop,
                    });
                }
                if let Some(text) = choice.delta.and_then(|d| d.content).filter(|t| !t.is_empty()) {
                    yield Ok(ChatEvent::Delta(text));
                }
            }
        }
    };
    require_done(events)
}

#[tonic::async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::OpenAiCompatible
    }

    fn is_cloud(&self) -> bool {
        self.cloud
    }

    async fn list_models(&self) -> Result<Vec<ProviderModel>, ProviderError> {
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Listed>,
        }
        #[derive(Deserialize)]
        struct Listed {
            id: String,
        }
        let response = send(self.request(reqwest::Method::GET, "/models")).await?;
        let models: Models = check(response, "").await?.json().await.map_err(transport)?;
        Ok(models
            .data
            .into_iter()
            .map(|m| ProviderModel {
                embedding: m.id.contains("embed"),
                name: m.id,
                ..ProviderModel::default()
            })
            .collect())
    }

    async fn chat(&self, model: &str, prompt: &Prompt) -> Result<ChatStream, ProviderError> {
        let response =
            send(self.request(reqwest::Method::POST, "/chat/completions").json(&chat_body(model, prompt)))
                .await?;
        let body = check(response, model).await?.bytes_stream();
        Ok(events(sse_data(body).map(|p| p.map_err(|e| ProviderError::Stream(e.without_url().to_string())))))
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, ProviderError> {
        #[derive(Deserialize)]
        struct Embedded {
            data: Vec<Item>,
            #[serde(default)]
            usage: Option<Usage>,
        }
        #[derive(Deserialize)]
        struct Item {
            embedding: Vec<f32>,
            #[serde(default)]
            index: usize,
        }
        let response = send(
            self.request(reqwest::Method::POST, "/embeddings").json(&json!({"model":model,"input":inputs})),
        )
        .await?;
        let mut embedded: Embedded = check(response, model).await?.json().await.map_err(transport)?;
        embedded.data.sort_by_key(|item| item.index);
        Ok(Embeddings {
            vectors: embedded.data.into_iter().map(|item| item.embedding).collect(),
            input_tokens: embedded.usage.map_or(0, |u| u.prompt_tokens),
        })
    }

    async fn pull(&self, _model: &str) -> Result<PullStream, ProviderError> {
        Err(ProviderError::Unsupported("pulling models"))
    }

    async fn delete(&self, _model: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("deleting models"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> reqwest::Response {
        reqwest::Response::from(http::Response::builder().status(status).body(body.to_owned()).unwrap())
    }

    #[tokio::test]
    async fn a_prompt_beyond_the_context_is_told_apart_from_other_refusals() {
        let recorded = include_str!("../../tests/fixtures/openai/error_context_exceeded.json");
        let error = check(answer(400, recorded), "m").await.unwrap_err();
        assert!(
            matches!(&error, ProviderError::ContextExceeded(m) if m.contains("4096 tokens")),
            "{error:?}"
        );
        let other = include_str!("../../tests/fixtures/openai/error_missing_messages.json");
        assert!(matches!(check(answer(400, other), "m").await.unwrap_err(), ProviderError::Rejected(_)));
    }

    async fn run(payloads: &[&str]) -> Vec<Result<ChatEvent, ProviderError>> {
        let owned: Vec<Result<String, ProviderError>> = payloads.iter().map(|p| Ok(p.to_string())).collect();
        events(futures::stream::iter(owned)).collect().await
    }

    #[tokio::test]
    async fn deltas_then_one_done_with_usage_and_finish() {
        let got = run(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#,
            "[DONE]",
        ])
        .await;
        assert_eq!(
            got,
            [
                Ok(ChatEvent::Delta("Hel".into())),
                Ok(ChatEvent::Delta("lo".into())),
                Ok(ChatEvent::Done { finish: Finish::Length, input_tokens: 12, output_tokens: 2 }),
            ]
        );
    }

    #[tokio::test]
    async fn a_stream_without_done_is_an_error() {
        let got = run(&[r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#]).await;
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Err(ProviderError::Stream(_))));
    }

    #[tokio::test]
    async fn an_error_payload_ends_the_stream() {
        let got = run(&[r#"{"error":{"message":"context length exceeded"}}"#]).await;
        assert_eq!(got, [Err(ProviderError::Stream("context length exceeded".into()))]);
    }
}
