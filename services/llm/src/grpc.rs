//! gRPC handlers: validate, authorize, delegate to the engine and stores, convert.

use crate::convert::{finish_to_i32, reason, reason_to_i16};
use crate::engine::{Call, Engine, Item, Outcome};
use crate::error::LlmError;
use crate::request;
use crate::selection::Features;
use crate::{ab_api, convert, usage_api};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::identity::{Caller, caller};
use codingagent_kernel::pagination;
use codingagent_kernel::validate;
use codingagent_proto::codingagent::common::v1::TokenUsage;
use codingagent_proto::codingagent::llm::v1 as pb;
use codingagent_proto::codingagent::llm::v1::llm_service_server::LlmService;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `LlmService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct Handlers {
    pub engine: Arc<Engine>,
}

fn features(features: Option<&pb::TaskFeatures>) -> Features {
    features.map_or_else(Features::default, |f| Features {
        task_type: f.task_type,
        complexity: f.complexity,
        language: f.language,
        context_tokens: f.context_tokens,
    })
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// Validates the parts shared by Generate and GenerateOnce.
fn call(
    messages: &[pb::ChatMessage],
    options: Option<&pb::GenerationOptions>,
    model: &str,
    bypass_cache: bool,
    task_id: &str,
    task_features: Option<&pb::TaskFeatures>,
    subject: &str,
) -> Result<Call, Status> {
    let mut violations = Vec::new();
    let prompt = request::prompt(messages, options).map_err(|v| violations.extend(v)).ok();
    if !model.is_empty()
        && let Err(violation) = request::model_id("model", model)
    {
        violations.push(violation);
    }
    if let Some(f) = task_features
        && f.context_tokens < 0
    {
        violations.push(FieldViolation::new("task_features.context_tokens", "must not be negative"));
    }
    violations.extend(request::texts(&[("task_id", task_id), ("ab_subject_id", subject)]));
    match prompt {
        Some(prompt) if violations.is_empty() => Ok(Call {
            prompt,
            model: non_empty(model),
            bypass_cache,
            task_id: non_empty(task_id),
            features: features(task_features),
            subject: non_empty(subject),
        }),
        _ => Err(LlmError::Invalid(violations).into()),
    }
}

fn result(outcome: &Outcome) -> pb::GenerationResult {
    pb::GenerationResult {
        finish_reason: finish_to_i32(outcome.finish),
        usage: Some(TokenUsage { input_tokens: outcome.input_tokens, output_tokens: outcome.output_tokens }),
        model: outcome.model.clone(),
        provider: outcome.provider.clone(),
        selection_reason: i32::from(reason_to_i16(outcome.selection.reason)),
        cache_hit: outcome.cache_hit,
        latency: Some(convert::duration(outcome.latency)),
        time_to_first_token: outcome.time_to_first_token.map(convert::duration),
        cost: Some(convert::usd(outcome.cost_micros)),
        usage_record_id: outcome.usage_id.to_string(),
        ab_test_id: outcome.selection.ab.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
        ab_variant_id: outcome.selection.ab.as_ref().map(|a| a.1.clone()).unwrap_or_default(),
    }
}

fn require_operator(caller: &Caller) -> Result<(), Status> {
    caller.require_operator()
}

#[tonic::async_trait]
impl LlmService for Handlers {
    type GenerateStream = ResponseStream<pb::GenerateResponse>;

    #[tracing::instrument(skip_all, fields(model))]
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let caller = caller(&request)?.clone();
        let r = request.into_inner();
        let call = call(
            &r.messages,
            r.options.as_ref(),
            &r.model,
            r.bypass_cache,
            &r.task_id,
            r.task_features.as_ref(),
            &r.ab_subject_id,
        )?;
        let mut items = self.engine.generate(caller, call).await.map_err(Status::from)?;
        let stream = async_stream::stream! {
            let mut seq = 0;
            while let Some(item) = items.recv().await {
                seq += 1;
                match item {
                    Ok(Item::Text(text)) => yield Ok(pb::GenerateResponse { seq, text_delta: text, result: None }),
                    Ok(Item::Done(outcome)) => yield Ok(pb::GenerateResponse { seq, text_delta: String::new(), result: Some(result(&outcome)) }),
                    Err(error) => yield Err(Status::from(error)),
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn generate_once(
        &self,
        request: Request<pb::GenerateOnceRequest>,
    ) -> Result<Response<pb::GenerateOnceResponse>, Status> {
        let caller = caller(&request)?.clone();
        let r = request.into_inner();
        let call = call(
            &r.messages,
            r.options.as_ref(),
            &r.model,
            r.bypass_cache,
            &r.task_id,
            r.task_features.as_ref(),
            &r.ab_subject_id,
        )?;
        let mut items = self.engine.generate(caller, call).await.map_err(Status::from)?;
        let mut text = String::new();
        while let Some(item) = items.recv().await {
            match item.map_err(Status::from)? {
                Item::Text(delta) => text.push_str(&delta),
                Item::Done(outcome) => {
                    return Ok(Response::new(pb::GenerateOnceResponse {
                        text,
                        result: Some(result(&outcome)),
                    }));
                }
            }
        }
        Err(LlmError::Unavailable("generation ended without a result".into()).into())
    }

    async fn embed(&self, request: Request<pb::EmbedRequest>) -> Result<Response<pb::EmbedResponse>, Status> {
        let caller = caller(&request)?.clone();
        let r = request.into_inner();
        let mut violations = Vec::new();
        if r.inputs.is_empty() || r.inputs.len() > 256 {
            violations.push(FieldViolation::new("inputs", "1..256 texts are required"));
        }
        for (index, input) in r.inputs.iter().enumerate() {
            let length = input.chars().count();
            if length == 0 || length > 32_000 {
                violations
                    .push(FieldViolation::new(format!("inputs[{index}]"), "must be 1..32,000 characters"));
            } else if let Err(violation) = validate::text(&format!("inputs[{index}]"), input) {
                violations.push(violation);
            }
        }
        if !r.model.is_empty()
            && let Err(violation) = request::model_id("model", &r.model)
        {
            violations.push(violation);
        }
        violations.extend(request::texts(&[("task_id", &r.task_id)]));
        if !violations.is_empty() {
            return Err(LlmError::Invalid(violations).into());
        }
        let (model, embedded) = self
            .engine
            .embed(&caller, non_empty(&r.model).as_deref(), &r.inputs, non_empty(&r.task_id))
            .await?;
        let dimensions = embedded.vectors.first().map_or(0, |v| v.len() as i32);
        Ok(Response::new(pb::EmbedResponse {
            embeddings: embedded.vectors.into_iter().map(|values| pb::Embedding { values }).collect(),
            model,
            dimensions,
            usage: Some(TokenUsage { input_tokens: embedded.input_tokens, output_tokens: 0 }),
        }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        caller(&request)?;
        let r = request.into_inner();
        let invalid = request::texts(&[("provider", &r.provider)]);
        if !invalid.is_empty() {
            return Err(LlmError::Invalid(invalid).into());
        }
        let limit = pagination::page_size(r.page_size, 100, 1_000)?;
        let after: Option<String> = pagination::decode(&r.page_token)?;
        let capability =
            pb::ModelCapability::try_from(r.capability).unwrap_or(pb::ModelCapability::Unspecified);
        let models: Vec<pb::Model> = self
            .engine
            .registry
            .all()
            .iter()
            .filter(|m| r.provider.is_empty() || m.provider == r.provider)
            .filter(|m| match capability {
                pb::ModelCapability::Embedding => m.info.embedding,
                pb::ModelCapability::Chat => !m.info.embedding,
                _ => true,
            })
            .filter(|m| after.as_ref().is_none_or(|after| &m.id > after))
            .take(limit as usize + 1)
            .map(convert::model)
            .collect();
        let (models, next_page_token) = pagination::page(models, limit, |m| m.id.clone());
        Ok(Response::new(pb::ListModelsResponse { models, next_page_token }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        caller(&request)?;
        let id = request.into_inner().model_id;
        request::model_id("model_id", &id).map_err(|v| LlmError::Invalid(vec![v]))?;
        let model = self.engine.registry.get(&id).ok_or_else(|| LlmError::UnknownModel {
            model: id.clone(),
            available: self.engine.registry.ids(),
        })?;
        Ok(Response::new(pb::GetModelResponse { model: Some(convert::model(&model)) }))
    }

    type PullModelStream = ResponseStream<pb::PullModelResponse>;

    async fn pull_model(
        &self,
        request: Request<pb::PullModelRequest>,
    ) -> Result<Response<Self::PullModelStream>, Status> {
        require_operator(caller(&request)?)?;
        let r = request.into_inner();
        if r.name.is_empty() || r.name.len() > 200 {
            return Err(LlmError::invalid("name", "must be 1..200 characters").into());
        }
        let invalid = request::texts(&[("name", &r.name), ("provider", &r.provider)]);
        if !invalid.is_empty() {
            return Err(LlmError::Invalid(invalid).into());
        }
        let provider_name = if r.provider.is_empty() { "ollama".to_owned() } else { r.provider.clone() };
        let provider = self
            .engine
            .provider(&provider_name)
            .cloned()
            .ok_or_else(|| LlmError::invalid("provider", "no such provider"))?;
        if provider.is_cloud() {
            return Err(
                LlmError::invalid("provider", "models can only be pulled into a local provider").into()
            );
        }
        let mut progress = provider.pull(&r.name).await.map_err(LlmError::from)?;
        let engine = self.engine.clone();
        let stream = async_stream::stream! {
            use futures::StreamExt;
            let mut seq = 0;
            while let Some(item) = progress.next().await {
                seq += 1;
                match item {
                    Ok(p) => yield Ok(pb::PullModelResponse { seq, status: p.status, digest: p.digest, completed_bytes: p.completed_bytes, total_bytes: p.total_bytes, model: None }),
                    Err(error) => { yield Err(Status::from(LlmError::from(error))); return; }
                }
            }
            // The new model is in the registry as soon as the pull ends.
            let providers = engine.providers.clone();
            if let Err(error) = engine.registry.sync(&engine.pool, &providers).await {
                yield Err(Status::from(LlmError::from(error)));
                return;
            }
            let model = engine.registry.get(&format!("{provider_name}/{}", r.name)).map(|m| convert::model(&m));
            yield Ok(pb::PullModelResponse { seq: seq + 1, status: "success".into(), model, ..Default::default() });
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn delete_model(
        &self,
        request: Request<pb::DeleteModelRequest>,
    ) -> Result<Response<pb::DeleteModelResponse>, Status> {
        require_operator(caller(&request)?)?;
        let id = request.into_inner().model_id;
        let (provider_name, name) =
            request::model_id("model_id", &id).map_err(|v| LlmError::Invalid(vec![v]))?;
        let provider = self.engine.provider(&provider_name).ok_or_else(|| LlmError::UnknownModel {
            model: id.clone(),
            available: self.engine.registry.ids(),
        })?;
        match provider.delete(&name).await {
            // Deleting what is already gone leaves the same state.
            Ok(()) | Err(crate::provider::ProviderError::ModelNotFound(_)) => {}
            Err(error) => return Err(LlmError::from(error).into()),
        }
        self.engine.registry.remove(&self.engine.pool, &id).await.map_err(LlmError::from)?;
        Ok(Response::new(pb::DeleteModelResponse {}))
    }

    async fn sync_registry(
        &self,
        request: Request<pb::SyncRegistryRequest>,
    ) -> Result<Response<pb::SyncRegistryResponse>, Status> {
        require_operator(caller(&request)?)?;
        let report = self
            .engine
            .registry
            .sync(&self.engine.pool, &self.engine.providers)
            .await
            .map_err(LlmError::from)?;
        Ok(Response::new(pb::SyncRegistryResponse {
            added: report.providers.iter().map(|p| p.added.len() as i32).sum(),
            updated: report.providers.iter().map(|p| p.updated.len() as i32).sum(),
            removed: report.providers.iter().map(|p| p.removed.len() as i32).sum(),
            providers: report
                .providers
                .iter()
                .map(|p| pb::ProviderSyncStatus {
                    provider: p.provider.clone(),
                    ok: p.error.is_none(),
                    error_message: p.error.clone().unwrap_or_default(),
                    model_count: p.model_count as i32,
                })
                .collect(),
            sync_time: Some(convert::now()),
        }))
    }

    async fn get_hardware_profile(
        &self,
        request: Request<pb::GetHardwareProfileRequest>,
    ) -> Result<Response<pb::GetHardwareProfileResponse>, Status> {
        let caller = caller(&request)?.clone();
        let hardware = &self.engine.hardware;
        let size = hardware.recommended_size();
        let default_model = self
            .engine
            .select(&caller, None, Features::default(), None, false)
            .await
            .map(|s| s.model)
            .unwrap_or_default();
        Ok(Response::new(pb::GetHardwareProfileResponse {
            profile: Some(pb::HardwareProfile {
                cpu_model: hardware.cpu_model.clone(),
                cpu_cores: hardware.cpu_cores as i32,
                cpu_threads: hardware.cpu_cores as i32,
                memory_bytes: hardware.ram_bytes as i64,
                available_memory_bytes: 0,
                gpus: hardware
                    .gpus
                    .iter()
                    .map(|g| pb::Gpu {
                        name: g.name.clone(),
                        vendor: "NVIDIA".into(),
                        vram_bytes: g.vram_bytes as i64,
                        free_vram_bytes: 0,
                    })
                    .collect(),
                recommended_max_parameters: (size.max_billions() * 1e9) as i64,
                recommended_parameter_size: size.label().into(),
                default_model,
                detect_time: Some(convert::now()),
            }),
        }))
    }

    async fn select_model(
        &self,
        request: Request<pb::SelectModelRequest>,
    ) -> Result<Response<pb::SelectModelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let r = request.into_inner();
        let mut invalid = Vec::new();
        if !r.model.is_empty()
            && let Err(violation) = request::model_id("model", &r.model)
        {
            invalid.push(violation);
        }
        invalid.extend(request::texts(&[("task_id", &r.task_id), ("ab_subject_id", &r.ab_subject_id)]));
        if !invalid.is_empty() {
            return Err(LlmError::Invalid(invalid).into());
        }
        let embedding = r.capability == pb::ModelCapability::Embedding as i32;
        let subject = non_empty(&r.ab_subject_id).or_else(|| non_empty(&r.task_id));
        let selection = self
            .engine
            .select(
                &caller,
                non_empty(&r.model).as_deref(),
                features(r.task_features.as_ref()),
                subject.as_deref(),
                embedding,
            )
            .await?;
        tracing::info!(model = %selection.model, reason = ?selection.reason, explanation = %selection.explanation, "model selected");
        Ok(Response::new(pb::SelectModelResponse {
            provider: selection.model.split('/').next().unwrap_or_default().to_owned(),
            model: selection.model,
            reason: reason(selection.reason) as i32,
            explanation: selection.explanation,
            ab_test_id: selection.ab.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
            ab_variant_id: selection.ab.map(|a| a.1).unwrap_or_default(),
            expected_success: selection.expected_success,
        }))
    }

    async fn create_ab_test(
        &self,
        request: Request<pb::CreateAbTestRequest>,
    ) -> Result<Response<pb::CreateAbTestResponse>, Status> {
        let caller = caller(&request)?.clone();
        ab_api::create(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_ab_test(
        &self,
        request: Request<pb::GetAbTestRequest>,
    ) -> Result<Response<pb::GetAbTestResponse>, Status> {
        let caller = caller(&request)?.clone();
        let test = ab_api::visible(&self.engine, &caller, &request.into_inner().ab_test_id).await?;
        Ok(Response::new(pb::GetAbTestResponse { ab_test: Some(ab_api::to_proto(&test)) }))
    }

    async fn list_ab_tests(
        &self,
        request: Request<pb::ListAbTestsRequest>,
    ) -> Result<Response<pb::ListAbTestsResponse>, Status> {
        let caller = caller(&request)?.clone();
        ab_api::list(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn assign_variant(
        &self,
        request: Request<pb::AssignVariantRequest>,
    ) -> Result<Response<pb::AssignVariantResponse>, Status> {
        let caller = caller(&request)?.clone();
        ab_api::assign(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn record_ab_outcome(
        &self,
        request: Request<pb::RecordAbOutcomeRequest>,
    ) -> Result<Response<pb::RecordAbOutcomeResponse>, Status> {
        let caller = caller(&request)?.clone();
        ab_api::record(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_ab_test_results(
        &self,
        request: Request<pb::GetAbTestResultsRequest>,
    ) -> Result<Response<pb::GetAbTestResultsResponse>, Status> {
        let caller = caller(&request)?.clone();
        let test = ab_api::visible(&self.engine, &caller, &request.into_inner().ab_test_id).await?;
        let results = ab_api::results(&self.engine, &test).await?;
        Ok(Response::new(pb::GetAbTestResultsResponse { results: Some(results) }))
    }

    async fn stop_ab_test(
        &self,
        request: Request<pb::StopAbTestRequest>,
    ) -> Result<Response<pb::StopAbTestResponse>, Status> {
        let caller = caller(&request)?.clone();
        ab_api::stop(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_usage(
        &self,
        request: Request<pb::ListUsageRequest>,
    ) -> Result<Response<pb::ListUsageResponse>, Status> {
        let caller = caller(&request)?.clone();
        usage_api::list(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_usage_summary(
        &self,
        request: Request<pb::GetUsageSummaryRequest>,
    ) -> Result<Response<pb::GetUsageSummaryResponse>, Status> {
        let caller = caller(&request)?.clone();
        usage_api::summary(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn get_budget(
        &self,
        request: Request<pb::GetBudgetRequest>,
    ) -> Result<Response<pb::GetBudgetResponse>, Status> {
        let caller = caller(&request)?.clone();
        usage_api::get_budget(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn set_budget(
        &self,
        request: Request<pb::SetBudgetRequest>,
    ) -> Result<Response<pb::SetBudgetResponse>, Status> {
        let caller = caller(&request)?.clone();
        usage_api::set_budget(&self.engine, &caller, request.into_inner()).await.map(Response::new)
    }
}
