//! A scripted OpenAI-compatible model server: `/v1/models` replays the local model server's
//! recorded answer (services/llm/tests/fixtures/openai/models.json) and `/v1/chat/completions`
//! streams the next scripted answer for the caller's role (planner, reviewer or coder) in the
//! recorded SSE framing (role chunk, content chunks, finish chunk, usage chunk, `[DONE]`).
//! Every request body is kept so tests can check what the model was shown.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Coder,
    Planner,
    Reviewer,
}

#[derive(Debug, Clone)]
struct Answer {
    text: String,
    /// Pause before the first token (to hold a step open).
    delay: Duration,
    /// Answer with this HTTP status and body instead (a recorded error payload).
    error: Option<(u16, String)>,
}

#[derive(Debug, Default)]
struct Script {
    coder: VecDeque<Answer>,
    planner: VecDeque<Answer>,
    reviewer: VecDeque<Answer>,
    requests: Vec<(Role, Value)>,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelDouble {
    pub(crate) base_url: String,
    script: Arc<Mutex<Script>>,
}

const MODELS: &str = include_str!("../../../llm/tests/fixtures/openai/models.json");

impl ModelDouble {
    pub(crate) async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new()
            .route("/v1/models", get(|| async { ([(header::CONTENT_TYPE, "application/json")], MODELS) }))
            .route("/v1/chat/completions", post(complete))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url: format!("http://{addr}/v1"), script }
    }

    /// Queues the next answer for `role`.
    pub(crate) fn answer(&self, role: Role, text: impl Into<String>) -> &Self {
        self.answer_after(role, text, Duration::ZERO)
    }

    pub(crate) fn answer_after(&self, role: Role, text: impl Into<String>, delay: Duration) -> &Self {
        let mut script = self.script.lock().unwrap();
        let answer = Answer { text: text.into(), delay, error: None };
        match role {
            Role::Coder => script.coder.push_back(answer),
            Role::Planner => script.planner.push_back(answer),
            Role::Reviewer => script.reviewer.push_back(answer),
        }
        self
    }

    /// Queues an error answer for `role`: `status` with the recorded `body`.
    pub(crate) fn fail(&self, role: Role, status: u16, body: &str) -> &Self {
        let mut script = self.script.lock().unwrap();
        let answer =
            Answer { text: String::new(), delay: Duration::ZERO, error: Some((status, body.to_owned())) };
        match role {
            Role::Coder => script.coder.push_back(answer),
            Role::Planner => script.planner.push_back(answer),
            Role::Reviewer => script.reviewer.push_back(answer),
        }
        self
    }

    /// The requests `role` received, oldest first.
    pub(crate) fn requests(&self, role: Role) -> Vec<Value> {
        self.script
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The last message of each request `role` received.
    pub(crate) fn last_messages(&self, role: Role) -> Vec<String> {
        self.requests(role)
            .iter()
            .map(|r| {
                r["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }
}

fn role_of(body: &Value) -> Role {
    let text = body["messages"].to_string();
    if text.contains("You are the planner") {
        Role::Planner
    } else if text.contains("You are the reviewer") {
        Role::Reviewer
    } else {
        Role::Coder
    }
}

async fn complete(State(script): State<Arc<Mutex<Script>>>, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let role = role_of(&request);
    let answer = {
        let mut script = script.lock().unwrap();
        script.requests.push((role, request.clone()));
        let queue = match role {
            Role::Coder => &mut script.coder,
            Role::Planner => &mut script.planner,
            Role::Reviewer => &mut script.reviewer,
        };
        queue.pop_front()
    };
    let Some(answer) = answer else {
        let error = json!({"error": {"code": 500, "message": format!("no scripted answer left for {role:?}"), "type": "server_error"}});
        return Response::builder()
            .status(500)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(error.to_string()))
            .unwrap();
    };
    if let Some((status, body)) = answer.error {
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
    }
    let prompt_tokens = body.len() as i64 / 4;
    let chunks: Vec<String> =
        answer.text.chars().collect::<Vec<_>>().chunks(12).map(|c| c.iter().collect()).collect();
    let completion_tokens = chunks.len() as i64;
    let stream = async_stream::stream! {
        let frame = |v: Value| Ok::<_, std::convert::Infallible>(format!("data: {v}\n\n"));
        let base = json!({"created": 1795689335, "id": "chatcmpl-double", "model": "gemma-3-270m", "system_fingerprint": "b0-unknown", "object": "chat.completion.chunk"});
        let with = |mut b: Value, extra: Value| { if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) { b.extend(e.clone()); } b };
        yield frame(with(base.clone(), json!({"choices": [{"finish_reason": null, "index": 0, "delta": {"role": "assistant", "content": null}}]})));
        tokio::time::sleep(answer.delay).await;
        for chunk in chunks {
            yield frame(with(base.clone(), json!({"choices": [{"finish_reason": null, "index": 0, "delta": {"content": chunk}}]})));
        }
        yield frame(with(base.clone(), json!({"choices": [{"finish_reason": "stop", "index": 0, "delta": {}}]})));
        yield frame(with(base.clone(), json!({"choices": [], "usage": {"completion_tokens": completion_tokens, "prompt_tokens": prompt_tokens, "total_tokens": completion_tokens + prompt_tokens}})));
        yield Ok("data: [DONE]\n\n".to_owned());
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
