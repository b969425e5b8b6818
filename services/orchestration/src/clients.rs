//! The services orchestration calls: the classifier (at creation) and the llm service (model
//! selection at creation, every model call of a run, A/B outcomes at the end). Each call is
//! made on behalf of the task's owner, so budgets, rate limits and usage land on that user.
//! Channels connect lazily: the service starts, and tasks still queue with the heuristic
//! choice, while either is down.

use crate::config::{Config, EndpointConfig};
use codingagent_kernel::identity::{OnBehalfOf, OutboundIdentity, TokenMinter};
use codingagent_proto::codingagent::classifier::v1 as cls;
use codingagent_proto::codingagent::classifier::v1::classifier_service_client::ClassifierServiceClient;
use codingagent_proto::codingagent::llm::v1 as llm;
use codingagent_proto::codingagent::llm::v1::llm_service_client::LlmServiceClient;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use futures::StreamExt;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

type Classifier = ClassifierServiceClient<InterceptedService<Channel, OutboundIdentity>>;
type Llm = LlmServiceClient<InterceptedService<Channel, OutboundIdentity>>;

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    classifier: Option<Classifier>,
    llm: Option<Llm>,
    call_timeout: Duration,
}

/// What the llm service chose.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub model: String,
    pub reason: i32,
    pub ab_test_id: String,
    pub ab_variant_id: String,
}

/// One finished model call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Completion {
    pub text: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: String,
    pub cost_micros: i64,
}

/// A finished task's result for its A/B test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AbOutcome<'a> {
    pub test: &'a str,
    pub task_id: &'a str,
    pub run_id: &'a str,
    pub success: bool,
    pub latency: Duration,
    /// Input and output tokens.
    pub usage: (i64, i64),
}

/// A model call that produced no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("the llm service is not configured")]
    NotConfigured,
    #[error("the model call failed: {0}")]
    Failed(String),
    #[error("the user's model budget is spent: {0}")]
    Budget(String),
    #[error("the prompt does not fit the model's context: {0}")]
    ContextExceeded(String),
}

fn channel(endpoint: &EndpointConfig, timeout: Duration) -> anyhow::Result<Option<Channel>> {
    if endpoint.endpoint.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        Endpoint::from_shared(endpoint.endpoint.clone())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .connect_lazy(),
    ))
}

fn on_behalf<T>(message: T, owner: &str, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(OnBehalfOf::user(owner));
    request.set_timeout(timeout);
    request
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

impl Clients {
    pub(crate) fn new(config: &Config) -> anyhow::Result<Self> {
        let identity = OutboundIdentity::new(TokenMinter::new(&config.identity), "orchestration");
        let call_timeout = Duration::from_secs(config.agent.call_timeout_secs);
        let classifier = channel(&config.classifier, Duration::from_millis(config.classifier.timeout_ms))?
            .map(|c| ClassifierServiceClient::with_interceptor(c, identity.clone()));
        // Model calls stream for minutes: their deadline is per call, not the channel's.
        let llm =
            channel(&config.llm, call_timeout)?.map(|c| LlmServiceClient::with_interceptor(c, identity));
        Ok(Self { classifier, llm, call_timeout })
    }

    /// The classifier's verdict for the task, or why there is none.
    pub(crate) async fn classify(
        &self,
        owner: &str,
        task_id: &str,
        text: &str,
    ) -> Result<(pb::TaskClassification, i32), String> {
        let mut client = self.classifier.clone().ok_or("the classifier is not configured")?;
        // The classifier takes at most 10,000 characters; the start says what the task is.
        let text: String = text.chars().take(10_000).collect();
        let request = cls::ClassifyRequest {
            text,
            task_id: task_id.to_owned(),
            request_id: format!("task-{task_id}"),
            ..Default::default()
        };
        let response = client
            .classify(on_behalf(request, owner, Duration::from_secs(30)))
            .await
            .map_err(|s| describe(&s))?
            .into_inner();
        let c = response.classification.ok_or("the classifier answered without a classification")?;
        let verdict = pb::TaskClassification {
            task_type: c.task_type,
            complexity: c.complexity,
            task_type_confidence: c.task_type_confidence,
            complexity_confidence: c.complexity_confidence,
            language: 0,
            classifier_version: c.model_version,
            classification_id: c.id,
        };
        Ok((verdict, c.recommended_strategy))
    }

    /// The model for the task: the override validated, or the llm service's choice.
    pub(crate) async fn select(
        &self,
        owner: &str,
        task_id: &str,
        explicit: &str,
        classification: &pb::TaskClassification,
    ) -> Result<Selection, String> {
        let mut client = self.llm.clone().ok_or("the llm service is not configured")?;
        let request = llm::SelectModelRequest {
            model: explicit.to_owned(),
            task_features: Some(llm::TaskFeatures {
                task_type: classification.task_type,
                complexity: classification.complexity,
                language: classification.language,
                context_tokens: 0,
            }),
            task_id: task_id.to_owned(),
            ab_subject_id: task_id.to_owned(),
            capability: 0,
        };
        let response = client
            .select_model(on_behalf(request, owner, Duration::from_secs(10)))
            .await
            .map_err(|s| describe(&s))?
            .into_inner();
        Ok(Selection {
            model: response.model,
            reason: response.reason,
            ab_test_id: response.ab_test_id,
            ab_variant_id: response.ab_variant_id,
        })
    }

    /// One streamed model call; `on_delta` sees the text as it arrives (for the live log).
    pub(crate) async fn generate(
        &self,
        owner: &str,
        task_id: &str,
        model: &str,
        messages: Vec<(i32, String)>,
        max_tokens: u32,
        mut on_delta: impl FnMut(&str),
    ) -> Result<Completion, CallError> {
        let mut client = self.llm.clone().ok_or(CallError::NotConfigured)?;
        let request = llm::GenerateRequest {
            messages: messages
                .into_iter()
                .map(|(role, content)| llm::ChatMessage { role, content, name: String::new() })
                .collect(),
            model: model.to_owned(),
            options: Some(llm::GenerationOptions {
                temperature: Some(0.0),
                max_tokens: Some(max_tokens.min(i32::MAX as u32) as i32),
                ..Default::default()
            }),
            task_id: task_id.to_owned(),
            ab_subject_id: task_id.to_owned(),
            ..Default::default()
        };
        let classify = |status: tonic::Status| match status.code() {
            tonic::Code::ResourceExhausted => CallError::Budget(status.message().to_owned()),
            tonic::Code::InvalidArgument
                if status.get_details_error_info().is_some_and(|info| info.reason == "CONTEXT_EXCEEDED") =>
            {
                CallError::ContextExceeded(status.message().to_owned())
            }
            _ => CallError::Failed(describe(&status)),
        };
        let mut stream = client
            .generate(on_behalf(request, owner, self.call_timeout))
            .await
            .map_err(classify)?
            .into_inner();
        let mut completion = Completion::default();
        while let Some(item) = stream.next().await {
            let item = item.map_err(classify)?;
            if !item.text_delta.is_empty() {
                on_delta(&item.text_delta);
                completion.text.push_str(&item.text_delta);
            }
            if let Some(result) = item.result {
                let usage = result.usage.unwrap_or_default();
                completion.input_tokens = usage.input_tokens;
                completion.output_tokens = usage.output_tokens;
                completion.model = result.model;
                completion.cost_micros = result.cost.map(|c| c.micros).unwrap_or_default();
                return Ok(completion);
            }
        }
        Err(CallError::Failed("the model's stream ended without a result".into()))
    }

    /// Records a finished task's outcome in its A/B test (best effort: logged when it fails).
    pub(crate) async fn record_ab_outcome(&self, owner: &str, outcome: AbOutcome<'_>) -> Result<(), String> {
        let mut client = self.llm.clone().ok_or("the llm service is not configured")?;
        let request = llm::RecordAbOutcomeRequest {
            ab_test_id: outcome.test.to_owned(),
            subject_id: outcome.task_id.to_owned(),
            success: outcome.success,
            latency: Some(codingagent_proto::helpers::duration(outcome.latency)),
            usage: Some(crate::convert::usage(outcome.usage.0, outcome.usage.1)),
            quality_score: None,
            // One outcome per run, however often the worker retries recording it.
            request_id: format!("run-{}", outcome.run_id),
        };
        client
            .record_ab_outcome(on_behalf(request, owner, Duration::from_secs(10)))
            .await
            .map(drop)
            .map_err(|s| describe(&s))
    }
}
