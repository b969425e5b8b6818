//! Model providers behind one trait: Ollama's native API and any OpenAI-compatible endpoint.
//! Both stream: a chat call yields text deltas and ends with usage and a finish reason, so
//! the service can relay tokens as they arrive and account for every call.

mod framing;
pub mod ollama;
pub mod openai;

use crate::request::Prompt;
use futures::stream::BoxStream;
use std::time::Duration;

/// Why a generation stopped, as providers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ContentFilter,
}

/// One item of a provider's chat stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Delta(String),
    Done { finish: Finish, input_tokens: i64, output_tokens: i64 },
}

pub type ChatStream = BoxStream<'static, Result<ChatEvent, ProviderError>>;

/// A model as its provider describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderModel {
    pub name: String,
    pub family: String,
    pub parameter_count: i64,
    pub quantization: String,
    pub size_bytes: i64,
    pub context_length: i32,
    pub digest: String,
    pub embedding: bool,
    pub loaded: bool,
}

/// Progress of a model download.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullProgress {
    pub status: String,
    pub digest: String,
    pub completed_bytes: i64,
    pub total_bytes: i64,
}

pub type PullStream = BoxStream<'static, Result<PullProgress, ProviderError>>;

/// Vectors and the tokens they consumed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub input_tokens: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider cannot be reached, timed out or failed on its side: retryable.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("model {0} not found at the provider")]
    ModelNotFound(String),
    /// The provider refused the request as malformed.
    #[error("provider rejected the request: {0}")]
    Rejected(String),
    /// The prompt is longer than the model's context window: the caller should send less.
    #[error("the prompt exceeds the model's context: {0}")]
    ContextExceeded(String),
    /// The provider broke the protocol or failed after the stream started.
    #[error("provider stream failed: {0}")]
    Stream(String),
    #[error("{0} is not supported by this provider")]
    Unsupported(&'static str),
}

impl ProviderError {
    /// Errors that say the provider is unhealthy, as opposed to the request being wrong.
    pub fn counts_against_provider(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Stream(_))
    }
}

/// The kinds of provider, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ollama,
    OpenAiCompatible,
}

#[tonic::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's name: the prefix of its model ids (`ollama`, `openai`, …).
    fn name(&self) -> &str;
    fn kind(&self) -> Kind;
    /// Whether calls cost money (and so count against provider budgets).
    fn is_cloud(&self) -> bool;
    async fn list_models(&self) -> Result<Vec<ProviderModel>, ProviderError>;
    async fn chat(&self, model: &str, prompt: &Prompt) -> Result<ChatStream, ProviderError>;
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, ProviderError>;
    async fn pull(&self, model: &str) -> Result<PullStream, ProviderError>;
    async fn delete(&self, model: &str) -> Result<(), ProviderError>;
}

/// An HTTP client with the timeouts every provider needs: connecting is quick or the
/// provider is down; a request as a whole may take long (generation), but never silently
/// forever, so each read must make progress. A client that cannot be built is an error for
/// start-up to report, never a fallback to one without these timeouts.
pub(crate) fn http_client(connect: Duration, idle: Duration) -> Result<reqwest::Client, reqwest::Error> {
    with_timeouts(reqwest::Client::builder(), connect, idle)
}

fn with_timeouts(
    builder: reqwest::ClientBuilder,
    connect: Duration,
    idle: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    builder.connect_timeout(connect).read_timeout(idle).build()
}

/// Sends a request, retrying once when it failed before the server could have processed it:
/// a pooled keep-alive connection that the server closed an instant earlier fails this way,
/// and a fresh connection succeeds. A provider that is down fails both tries quickly.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    let retry = request.try_clone();
    match request.send().await {
        Ok(response) => Ok(response),
        Err(error) if error.is_request() && !error.is_timeout() => match retry {
            Some(retry) => retry.send().await.map_err(transport),
            None => Err(transport(error)),
        },
        Err(error) => Err(transport(error)),
    }
}

/// Maps transport failures to `Unavailable`.
pub(crate) fn transport(error: reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(error.without_url().to_string())
}

/// Relays a provider's events and ends after the final `Done` or the first error. A body that
/// closes without `Done` (a dropped connection) ends with an error, so a truncated answer is
/// never mistaken for a complete one.
pub(crate) fn require_done(
    events: impl futures::Stream<Item = Result<ChatEvent, ProviderError>> + Send + 'static,
) -> ChatStream {
    use futures::StreamExt;
    Box::pin(async_stream::stream! {
        let mut events = std::pin::pin!(events);
        while let Some(item) = events.next().await {
            let last = !matches!(item, Ok(ChatEvent::Delta(_)));
            yield item;
            if last {
                return;
            }
        }
        yield Err(ProviderError::Stream("the provider closed the stream before finishing".into()));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_cannot_be_built_is_an_error_not_one_without_timeouts() {
        let second = Duration::from_secs(1);
        assert!(http_client(second, second).is_ok());
        // No TLS version left to speak: building fails, and so must the provider's client.
        let impossible = reqwest::Client::builder()
            .min_tls_version(reqwest::tls::Version::TLS_1_3)
            .max_tls_version(reqwest::tls::Version::TLS_1_2);
        assert!(with_timeouts(impossible, second, second).is_err());
    }
}
