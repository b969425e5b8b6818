//! Ollama's HTTP API: `/api/chat` (NDJSON stream), `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/pull` (NDJSON progress), `/api/delete` and `/api/embed`.

use super::framing::lines;
use super::{
    ChatEvent, ChatStream, Embeddings, Finish, Kind, Provider, ProviderError, ProviderModel, PullProgress,
    PullStream, http_client, require_done, send, transport,
};
use crate::request::{Prompt, Role};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Ollama {
    name: String,
    base_url: String,
    http: reqwest::Client,
}

impl Ollama {
    /// `base_url` like `http://127.0.0.1:11434`; `idle` bounds the wait for each chunk.
    pub fn new(
        name: &str,
        base_url: &str,
        connect: Duration,
        idle: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: http_client(connect, idle)?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn post(&self, path: &str, body: &Value, model: &str) -> Result<reqwest::Response, ProviderError> {
        let response = send(self.http.post(self.url(path)).json(body)).await?;
        check(response, model).await
    }
}

/// Ollama answers errors as `{"error": "..."}` with a 4xx/5xx status.
async fn check(response: reqwest::Response, model: &str) -> Result<reqwest::Response, ProviderError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = response.json::<Value>().await.ok().and_then(|v| v["error"].as_str().map(str::to_owned));
    let message = message.unwrap_or_else(|| status.to_string());
    Err(match status.as_u16() {
        404 => ProviderError::ModelNotFound(model.to_owned()),
        400..=499 => ProviderError::Rejected(message),
        _ => ProviderError::Unavailable(message),
    })
}

#[derive(Debug, Deserialize)]
struct ChatChunk {
    #[serde(default)]
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: i64,
    #[serde(default)]
    eval_count: i64,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: String,
}

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn chat_body(model: &str, prompt: &Prompt) -> Value {
    let messages: Vec<Value> =
        prompt.messages.iter().map(|m| json!({ "role": role(m.role), "content": m.content })).collect();
    let o = &prompt.options;
    let mut options = serde_json::Map::new();
    if let Some(t) = o.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = o.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(m) = o.max_tokens {
        options.insert("num_predict".into(), json!(m));
    }
    if !o.stop.is_empty() {
        options.insert("stop".into(), json!(o.stop));
    }
    if let Some(s) = o.seed {
        options.insert("seed".into(), json!(s));
    }
    let mut body = json!({ "model": model, "messages": messages, "stream": true, "options": options });
    if o.json {
        body["format"] = json!("json");
    }
    body
}

fn parse_chat_line(line: &str) -> Result<Option<ChatEvent>, ProviderError> {
    let chunk: ChatChunk =
        serde_json::from_str(line).map_err(|e| ProviderError::Stream(format!("malformed chunk: {e}")))?;
    if let Some(error) = chunk.error {
        return Err(ProviderError::Stream(error));
    }
    if chunk.done {
        let finish = match chunk.done_reason.as_deref() {
            Some("length") => Finish::Length,
            _ => Finish::Stop,
        };
        return Ok(Some(ChatEvent::Done {
            finish,
            input_tokens: chunk.prompt_eval_count,
            output_tokens: chunk.eval_count,
        }));
    }
    Ok(chunk.message.map(|m| m.content).filter(|c| !c.is_empty()).map(ChatEvent::Delta))
}

/// "7.6B" → 7,600,000,000; "270M" → 270,000,000.
fn parse_parameter_size(text: &str) -> i64 {
    let text = text.trim();
    let (number, scale) = match text.chars().last() {
        Some('B' | 'b') => (&text[..text.len() - 1], 1e9),
        Some('M' | 'm') => (&text[..text.len() - 1], 1e6),
        Some('K' | 'k') => (&text[..text.len() - 1], 1e3),
        _ => (text, 1.0),
    };
    number.parse::<f64>().map(|n| (n * scale).round() as i64).unwrap_or(0)
}

#[derive(Debug, Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagModel>,
}

#[derive(Debug, Deserialize)]
struct TagModel {
    name: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    details: Details,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    family: String,
    #[serde(default)]
    families: Option<Vec<String>>,
    #[serde(default)]
    parameter_size: String,
    #[serde(default)]
    quantization_level: String,
}

#[tonic::async_trait]
impl Provider for Ollama {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Ollama
    }

    fn is_cloud(&self) -> bool {
        false
    }

    async fn list_models(&self) -> Result<Vec<ProviderModel>, ProviderError> {
        let response = send(self.http.get(self.url("/api/tags"))).await?;
        let tags: Tags = check(response, "").await?.json().await.map_err(transport)?;
        // Which models are in memory right now; a failure here only loses that detail.
        let loaded: Vec<String> = match send(self.http.get(self.url("/api/ps"))).await {
            Ok(response) => response
                .json::<Tags>()
                .await
                .map(|ps| ps.models.into_iter().map(|m| m.name).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut models = Vec::with_capacity(tags.models.len());
        for tag in tags.models {
            let context_length = self.context_length(&tag.name).await.unwrap_or(0);
            let family = tag.details.family.clone();
            let embedding = family.contains("bert")
                || tag.details.families.iter().flatten().any(|f| f.contains("bert"))
                || tag.name.contains("embed");
            models.push(ProviderModel {
                loaded: loaded.contains(&tag.name),
                parameter_count: parse_parameter_size(&tag.details.parameter_size),
                quantization: tag.details.quantization_level,
                size_bytes: tag.size,
                digest: tag.digest,
                family,
                embedding,
                context_length,
                name: tag.name,
            });
        }
        Ok(models)
    }

    async fn chat(&self, model: &str, prompt: &Prompt) -> Result<ChatStream, ProviderError> {
        let response = self.post("/api/chat", &chat_body(model, prompt), model).await?;
        let events = lines(response.bytes_stream()).filter_map(|line| async move {
            match line {
                Ok(line) => parse_chat_line(&line).transpose(),
                Err(error) => Some(Err(ProviderError::Stream(error.without_url().to_string()))),
            }
        });
        Ok(require_done(events))
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, ProviderError> {
        #[derive(Deserialize)]
        struct Embedded {
            embeddings: Vec<Vec<f32>>,
            #[serde(default)]
            prompt_eval_count: i64,
        }
        let response = self.post("/api/embed", &json!({ "model": model, "input": inputs }), model).await?;
        let embedded: Embedded = response.json().await.map_err(transport)?;
        Ok(Embeddings { vectors: embedded.embeddings, input_tokens: embedded.prompt_eval_count })
    }

    async fn pull(&self, model: &str) -> Result<PullStream, ProviderError> {
        #[derive(Deserialize)]
        struct Progress {
            #[serde(default)]
            status: String,
            #[serde(default)]
            digest: String,
            #[serde(default)]
            completed: i64,
            #[serde(default)]
            total: i64,
            #[serde(default)]
            error: Option<String>,
        }
        let response = self.post("/api/pull", &json!({ "model": model, "stream": true }), model).await?;
        let stream = lines(response.bytes_stream()).map(|line| {
            let line = line.map_err(|e| ProviderError::Stream(e.without_url().to_string()))?;
            let progress: Progress = serde_json::from_str(&line)
                .map_err(|e| ProviderError::Stream(format!("malformed progress: {e}")))?;
            if let Some(error) = progress.error {
                return Err(ProviderError::Stream(error));
            }
            Ok(PullProgress {
                status: progress.status,
                digest: progress.digest,
                completed_bytes: progress.completed,
                total_bytes: progress.total,
            })
        });
        Ok(stream.boxed())
    }

    async fn delete(&self, model: &str) -> Result<(), ProviderError> {
        let response = send(self.http.delete(self.url("/api/delete")).json(&json!({"model":model}))).await?;
        check(response, model).await.map(drop)
    }
}

impl Ollama {
    /// The context window from `/api/show` (`model_info["<arch>.context_length"]`).
    async fn context_length(&self, model: &str) -> Option<i32> {
        let info: Value =
            self.post("/api/show", &json!({ "model": model }), model).await.ok()?.json().await.ok()?;
        let model_info = info.get("model_info")?.as_object()?;
        model_info
            .iter()
            .find(|(key, _)| key.ends_with(".context_length"))
            .and_then(|(_, value)| value.as_i64())
            .and_then(|n| i32::try_from(n).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_lines_become_events() {
        let delta = r#"{"model":"m","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"Hel"},"done":false}"#;
        assert_eq!(parse_chat_line(delta).unwrap(), Some(ChatEvent::Delta("Hel".into())));
        let done = r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":26,"eval_count":290}"#;
        assert_eq!(
            parse_chat_line(done).unwrap(),
            Some(ChatEvent::Done { finish: Finish::Length, input_tokens: 26, output_tokens: 290 })
        );
        assert!(
            matches!(parse_chat_line(r#"{"error":"out of memory"}"#), Err(ProviderError::Stream(m)) if m == "out of memory")
        );
        assert!(parse_chat_line("{not json").is_err());
    }

    #[test]
    fn parameter_sizes_parse() {
        assert_eq!(parse_parameter_size("7.6B"), 7_600_000_000);
        assert_eq!(parse_parameter_size("270M"), 270_000_000);
        assert_eq!(parse_parameter_size(""), 0);
    }
}
