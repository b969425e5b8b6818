//! The generation path: validate → select a model → check budgets → cache → provider (behind
//! its circuit breaker, with the cloud fallback) → relay tokens → record usage.
//!
//! Generation runs on its own task and sends items through a channel, so a client that goes
//! away is noticed at the next token: the provider request is dropped (which cancels it) and
//! the call is recorded as cancelled with the tokens produced so far.

use crate::breaker::Breaker;
use crate::budget::{self, Hold};
use crate::cache::{Cache, Entry};
use crate::config::Config;
use crate::convert::{finish_from_i32, finish_to_i32, reason_to_i16};
use crate::error::{LlmError, Result};
use crate::hardware::Hardware;
use crate::provider::{ChatEvent, Finish, Provider, ProviderError};
use crate::registry::Registry;
use crate::request::Prompt;
use crate::selection::{self, Features, Inputs, Reason, Selection, SelectionError};
use crate::store::{self, Usage};
use chrono::Utc;
use codingagent_kernel::error::permission_denied;
use codingagent_kernel::identity::{Caller, PrincipalKind};
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Everything the service shares between requests.
#[derive(Debug)]
pub(crate) struct Engine {
    pub config: Config,
    pub pool: PgPool,
    pub registry: Registry,
    pub providers: Vec<Arc<dyn Provider>>,
    pub cache: Option<Cache>,
    pub breakers: HashMap<String, Breaker>,
    pub hardware: Hardware,
}

/// A validated generation request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub prompt: Prompt,
    pub model: Option<String>,
    pub bypass_cache: bool,
    pub task_id: Option<String>,
    pub features: Features,
    pub subject: Option<String>,
}

/// One item of a generation, as the gRPC layer relays it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Text(String),
    Done(Box<Outcome>),
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub finish: Finish,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: String,
    pub provider: String,
    pub selection: Selection,
    pub cache_hit: bool,
    pub latency: Duration,
    pub time_to_first_token: Option<Duration>,
    pub cost_micros: i64,
    pub usage_id: Uuid,
}

/// Call outcomes as stored (the contract's CallOutcome numbers).
const OUTCOME_SUCCESS: i16 = 1;
const OUTCOME_ERROR: i16 = 2;
const OUTCOME_CANCELLED: i16 = 3;
const KIND_GENERATE: i16 = 1;
const KIND_EMBED: i16 = 2;

impl Engine {
    pub(crate) fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Chooses the model for a call without calling it.
    pub(crate) async fn select(
        &self,
        caller: &Caller,
        call_model: Option<&str>,
        features: Features,
        subject: Option<&str>,
        embedding: bool,
    ) -> Result<Selection> {
        if let Some(model) = call_model {
            self.may_pick(caller, model)?;
        }
        let models = self.registry.all();
        let subject = subject
            .map(str::to_owned)
            .unwrap_or_else(|| caller.user_id().unwrap_or(&caller.subject).to_owned());
        let (tests, history, promoted) = if call_model.is_some() || embedding {
            (Vec::new(), Vec::new(), None)
        } else {
            (
                store::running_tests(&self.pool).await?,
                store::model_history(&self.pool, features.task_type, features.complexity).await?,
                store::promoted_default(&self.pool, &scope_keys(&features)).await?,
            )
        };
        let inputs = Inputs {
            explicit: call_model,
            features,
            subject: &subject,
            embedding,
            tests,
            history,
            learned_min_outcomes: self.config.routing.learned_min_outcomes,
            exploration: self.config.routing.exploration_rate,
            promoted_default: promoted,
            configured_default: Some(self.config.routing.default_model.clone()).filter(|m| !m.is_empty()),
            hardware: Some(self.hardware.recommended_size()),
        };
        selection::select(&models, &inputs).map_err(|error| match error {
            SelectionError::UnknownModel { model, available } => LlmError::UnknownModel { model, available },
            SelectionError::NoModel => LlmError::NoModel,
        })
    }

    /// Refuses an explicitly named cloud model to callers the configuration does not allow.
    fn may_pick(&self, caller: &Caller, model: &str) -> Result<()> {
        let provider = model.split('/').next().unwrap_or_default();
        let cloud = self.provider(provider).is_some_and(|p| p.is_cloud());
        if !cloud || self.config.routing.explicit_cloud_models.allows(caller.is_operator()) {
            return Ok(());
        }
        Err(LlmError::Denied(Box::new(permission_denied(
            "CLOUD_MODEL_NOT_ALLOWED",
            format!("{model} is a cloud model, which this installation does not let you choose"),
        ))))
    }

    /// Starts a generation; items arrive on the returned channel. Errors before the first
    /// token are returned directly.
    pub(crate) async fn generate(
        self: &Arc<Self>,
        caller: Caller,
        call: Call,
    ) -> Result<mpsc::Receiver<Result<Item>>> {
        let started = Instant::now();
        let selection = self
            .select(
                &caller,
                call.model.as_deref(),
                call.features,
                call.subject.as_deref().or(call.task_id.as_deref()),
                false,
            )
            .await?;
        let context_length = self.registry.get(&selection.model).map_or(0, |m| m.info.context_length);
        let estimate = budget::estimate(
            &call.prompt,
            self.config.budgets.default_reserved_output_tokens,
            context_length,
        );
        let mut hold = self.reserve_user(&caller, estimate).await?;
        let (tx, rx) = mpsc::channel(64);

        let cacheable = self.cache.is_some() && call.prompt.options.is_deterministic();
        if cacheable
            && !call.bypass_cache
            && let Some(cache) = &self.cache
            && let Some(entry) = cache.get(&cache_scope(&caller), &selection.model, &call.prompt).await
        {
            let provider = selection.model.split('/').next().unwrap_or_default().to_owned();
            let engine = self.clone();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Item::Text(entry.text.clone()))).await;
                let outcome = Outcome {
                    finish: finish_from_i32(entry.finish_reason),
                    input_tokens: entry.input_tokens,
                    output_tokens: entry.output_tokens,
                    model: selection.model.clone(),
                    provider,
                    selection,
                    cache_hit: true,
                    latency: started.elapsed(),
                    time_to_first_token: Some(started.elapsed()),
                    cost_micros: 0,
                    usage_id: Uuid::now_v7(),
                };
                let recorded = engine.record(&caller, &call, &outcome, OUTCOME_SUCCESS, KIND_GENERATE).await;
                hold.release().await;
                let _ = tx.send(recorded.map(|()| Item::Done(Box::new(outcome)))).await;
            });
            return Ok(rx);
        }

        let (selection, stream) = match self.open_stream(&selection, &call.prompt, estimate).await {
            Ok((selection, stream, provider_hold)) => {
                hold.merge(provider_hold);
                (selection, stream)
            }
            Err(error) => {
                hold.release().await;
                return Err(error);
            }
        };
        let engine = self.clone();
        tokio::spawn(async move {
            engine.relay(caller, call, selection, stream, started, tx, cacheable, hold).await;
        });
        Ok(rx)
    }

    /// Opens the provider stream for the selected model, or for the fallback when the
    /// primary's breaker is open or it fails before streaming, with what it holds of the
    /// provider's budget.
    async fn open_stream(
        &self,
        selection: &Selection,
        prompt: &Prompt,
        estimate: i64,
    ) -> Result<(Selection, crate::provider::ChatStream, Hold)> {
        let primary = self.try_open(&selection.model, prompt, estimate).await;
        let primary_error = match primary {
            Ok((stream, hold)) => return Ok((selection.clone(), stream, hold)),
            Err(error) => error,
        };
        let fallback = &self.config.routing.fallback_model;
        let retryable = matches!(
            &primary_error,
            LlmError::Unavailable(_) | LlmError::Provider(ProviderError::Unavailable(_))
        );
        if !retryable || fallback.is_empty() || fallback == &selection.model {
            return Err(primary_error);
        }
        let (stream, hold) = match self.try_open(fallback, prompt, estimate).await {
            Ok(opened) => opened,
            Err(error @ LlmError::BudgetExhausted { .. }) => {
                tracing::warn!(%error, "fallback provider over budget; not used");
                return Err(primary_error);
            }
            Err(error) => return Err(error),
        };
        let explanation =
            format!("{} was unavailable ({primary_error}); fell back to {fallback}", selection.model);
        Ok((
            Selection {
                model: fallback.clone(),
                reason: Reason::Fallback,
                explanation,
                ab: None,
                expected_success: None,
            },
            stream,
            hold,
        ))
    }

    /// Opens a chat stream on `model`'s provider, holding `estimate` tokens of its budget
    /// when it is a cloud provider.
    async fn try_open(
        &self,
        model: &str,
        prompt: &Prompt,
        estimate: i64,
    ) -> Result<(crate::provider::ChatStream, Hold)> {
        let (provider_name, name) =
            model.split_once('/').ok_or_else(|| LlmError::invalid("model", "malformed model id"))?;
        let provider = self
            .provider(provider_name)
            .ok_or_else(|| LlmError::Unavailable(format!("provider {provider_name} is not configured")))?;
        // Before the breaker: letting a call through a half-open breaker takes its one trial.
        let hold = self.reserve_provider(provider_name, estimate).await?;
        let breaker = self.breakers.get(provider_name);
        if breaker.is_some_and(|b| !b.allow(Instant::now())) {
            hold.release().await;
            return Err(LlmError::Unavailable(format!(
                "provider {provider_name} is failing; its circuit breaker is open"
            )));
        }
        match provider.chat(name, prompt).await {
            Ok(stream) => Ok((stream, hold)),
            Err(error) => {
                if error.counts_against_provider()
                    && let Some(breaker) = breaker
                {
                    breaker.record_failure(Instant::now());
                }
                hold.release().await;
                Err(error.into())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn relay(
        self: Arc<Self>,
        caller: Caller,
        call: Call,
        selection: Selection,
        mut stream: crate::provider::ChatStream,
        started: Instant,
        tx: mpsc::Sender<Result<Item>>,
        cacheable: bool,
        hold: Hold,
    ) {
        let provider = selection.model.split('/').next().unwrap_or_default().to_owned();
        let mut text = String::new();
        let mut first_token = None;
        let mut outcome = Outcome {
            finish: Finish::Stop,
            input_tokens: 0,
            output_tokens: 0,
            model: selection.model.clone(),
            provider: provider.clone(),
            selection,
            cache_hit: false,
            latency: Duration::ZERO,
            time_to_first_token: None,
            cost_micros: 0,
            usage_id: Uuid::now_v7(),
        };
        let mut result = OUTCOME_CANCELLED;
        let mut failure = None;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = tx.closed() => break,
            };
            match event {
                Some(Ok(ChatEvent::Delta(delta))) => {
                    first_token.get_or_insert_with(|| started.elapsed());
                    text.push_str(&delta);
                    if tx.send(Ok(Item::Text(delta))).await.is_err() {
                        break;
                    }
                }
                Some(Ok(ChatEvent::Done { finish, input_tokens, output_tokens })) => {
                    outcome.finish = finish;
                    outcome.input_tokens = input_tokens;
                    outcome.output_tokens = output_tokens;
                    result = OUTCOME_SUCCESS;
                    break;
                }
                Some(Err(error)) => {
                    result = OUTCOME_ERROR;
                    failure = Some(error);
                    break;
                }
                None => break,
            }
        }
        drop(stream); // cancels the provider request if it is still running
        if let Some(breaker) = self.breakers.get(&provider) {
            match (&failure, result) {
                (Some(error), _) if error.counts_against_provider() => breaker.record_failure(Instant::now()),
                (_, OUTCOME_SUCCESS) => breaker.record_success(),
                _ => {}
            }
        }
        if result != OUTCOME_SUCCESS {
            // Tokens produced before the end still count; estimate what the provider never reported.
            outcome.output_tokens = estimate_tokens(&text);
            outcome.input_tokens = call.prompt.messages.iter().map(|m| estimate_tokens(&m.content)).sum();
        }
        outcome.latency = started.elapsed();
        outcome.time_to_first_token = first_token;
        outcome.cost_micros = self.cost(&provider, outcome.input_tokens, outcome.output_tokens);
        let recorded = self.record(&caller, &call, &outcome, result, KIND_GENERATE).await;
        // Released only now that the real tokens are charged, so the budget never looks freer
        // than it is.
        hold.release().await;
        if result == OUTCOME_SUCCESS
            && cacheable
            && let Some(cache) = &self.cache
        {
            let entry = Entry {
                text,
                finish_reason: finish_to_i32(outcome.finish),
                input_tokens: outcome.input_tokens,
                output_tokens: outcome.output_tokens,
            };
            cache.put(&cache_scope(&caller), &outcome.model, &call.prompt, &entry).await;
        }
        let last = match (failure, recorded) {
            (Some(error), _) => Err(LlmError::Provider(error)),
            (None, Err(error)) => Err(error),
            (None, Ok(())) if result == OUTCOME_SUCCESS => Ok(Item::Done(Box::new(outcome))),
            (None, Ok(())) => return, // cancelled: nobody is listening
        };
        let _ = tx.send(last).await;
    }

    /// Micro-dollars for a call at the provider's configured prices.
    pub(crate) fn cost(&self, provider: &str, input_tokens: i64, output_tokens: i64) -> i64 {
        self.config.openai.iter().find(|p| p.name == provider).map_or(0, |p| {
            (input_tokens * p.input_price_micros_per_million
                + output_tokens * p.output_price_micros_per_million)
                / 1_000_000
        })
    }

    /// Writes the usage record and its `InferenceCompleted` event in one statement.
    pub(crate) async fn record(
        &self,
        caller: &Caller,
        call: &Call,
        outcome: &Outcome,
        result: i16,
        kind: i16,
    ) -> Result<()> {
        let usage = Usage {
            id: outcome.usage_id,
            created_at: Utc::now(),
            caller_kind: if caller.kind == PrincipalKind::User { 1 } else { 2 },
            caller_id: caller.subject.clone(),
            user_id: caller.user_id().map(str::to_owned),
            task_id: call.task_id.clone(),
            model: outcome.model.clone(),
            provider: outcome.provider.clone(),
            kind,
            outcome: result,
            // Cache hits are recorded with the original counts but charged nothing.
            input_tokens: outcome.input_tokens,
            output_tokens: outcome.output_tokens,
            latency_ms: outcome.latency.as_millis() as i64,
            ttft_ms: outcome.time_to_first_token.map(|d| d.as_millis() as i64),
            cost_micros: outcome.cost_micros,
            cache_hit: outcome.cache_hit,
            selection_reason: reason_to_i16(outcome.selection.reason),
            ab_test_id: outcome.selection.ab.as_ref().and_then(|(t, _)| Uuid::parse_str(t).ok()),
            ab_variant_id: outcome.selection.ab.as_ref().map(|(_, v)| v.clone()),
            finish_reason: finish_to_i32(outcome.finish) as i16,
            task_type: call.features.task_type as i16,
            complexity: call.features.complexity as i16,
            language: call.features.language as i16,
        };
        let event = crate::events::inference_completed(&crate::convert::usage_record(&usage));
        store::insert_usage(&self.pool, &usage, event).await?;
        Ok(())
    }

    /// Embeddings for `inputs` with the chosen (or default embedding) model.
    pub(crate) async fn embed(
        &self,
        caller: &Caller,
        model: Option<&str>,
        inputs: &[String],
        task_id: Option<String>,
    ) -> Result<(String, crate::provider::Embeddings)> {
        let started = Instant::now();
        let selection = self.select(caller, model, Features::default(), None, true).await?;
        let (provider_name, name) = selection.model.split_once('/').unwrap_or_default();
        let provider = self
            .provider(provider_name)
            .ok_or_else(|| LlmError::Unavailable(format!("provider {provider_name} is not configured")))?;
        let estimate: i64 = inputs.iter().map(|i| estimate_tokens(i)).sum();
        let mut hold = self.reserve_user(caller, estimate).await?;
        match self.reserve_provider(provider_name, estimate).await {
            Ok(provider_hold) => hold.merge(provider_hold),
            Err(error) => {
                hold.release().await;
                return Err(error);
            }
        }
        let embedded = provider.embed(name, inputs).await;
        let call = Call {
            prompt: Prompt { messages: Vec::new(), options: Default::default() },
            model: None,
            bypass_cache: true,
            task_id,
            features: Features::default(),
            subject: None,
        };
        let tokens = embedded.as_ref().map_or(0, |e| e.input_tokens);
        let outcome = Outcome {
            finish: Finish::Stop,
            input_tokens: tokens,
            output_tokens: 0,
            model: selection.model.clone(),
            provider: provider_name.to_owned(),
            cost_micros: self.cost(provider_name, tokens, 0),
            selection,
            cache_hit: false,
            latency: started.elapsed(),
            time_to_first_token: None,
            usage_id: Uuid::now_v7(),
        };
        let result = if embedded.is_ok() { OUTCOME_SUCCESS } else { OUTCOME_ERROR };
        let recorded = self.record(caller, &call, &outcome, result, KIND_EMBED).await;
        hold.release().await;
        recorded?;
        Ok((outcome.model, embedded?))
    }
}

/// Whose cache entries a call may read and write: its effective user's, or the calling
/// service's own when it acts for nobody (prefixed, so a user named like a service is not it).
fn cache_scope(caller: &Caller) -> String {
    match caller.user_id() {
        Some(user) => format!("user:{user}"),
        None => format!("service:{}", caller.subject),
    }
}

/// Scope keys from most to least specific, for promoted defaults.
pub(crate) fn scope_keys(features: &Features) -> Vec<String> {
    vec![
        format!("type={};complexity={}", features.task_type, features.complexity),
        format!("type={}", features.task_type),
        "all".to_owned(),
    ]
}

/// About four characters per token for English text and code; used only when a provider
/// could not report counts (a cancelled or failed stream).
pub(crate) fn estimate_tokens(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}
