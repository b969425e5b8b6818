//! gRPC handlers: identify the caller and delegate to the aggregate's module
//! (`classifications`, `feedback`, `models`, `jobs`), which validates, authorizes and acts.

use crate::engine::Engine;
use crate::error::Result;
use crate::{classifications, feedback, jobs, models};
use codingagent_kernel::error::respond;
use codingagent_kernel::identity::caller_and_message as parts;
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::classifier::v1::classifier_service_server::ClassifierService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `ClassifierService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct Handlers {
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl ClassifierService for Handlers {
    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let (caller, request) = parts(request)?;
        let classification = classifications::classify(&self.engine, &caller, request).await;
        respond(classification.map(|c| pb::ClassifyResponse { classification: Some(c) }))
    }

    async fn get_classification(
        &self,
        request: Request<pb::GetClassificationRequest>,
    ) -> Result<Response<pb::GetClassificationResponse>, Status> {
        let (caller, request) = parts(request)?;
        let classification = classifications::get(&self.engine, &caller, request).await;
        respond(classification.map(|c| pb::GetClassificationResponse { classification: Some(c) }))
    }

    async fn submit_feedback(
        &self,
        request: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::SubmitFeedbackResponse>, Status> {
        let (caller, request) = parts(request)?;
        let feedback = feedback::submit(&self.engine, &caller, request).await;
        respond(feedback.map(|f| pb::SubmitFeedbackResponse { feedback: Some(f) }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let (_, request) = parts(request)?;
        respond(models::list(&self.engine, request).await)
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let (_, request) = parts(request)?;
        let model = models::get(&self.engine, request).await;
        respond(model.map(|m| pb::GetModelResponse { model: Some(m) }))
    }

    async fn promote_model(
        &self,
        request: Request<pb::PromoteModelRequest>,
    ) -> Result<Response<pb::PromoteModelResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(models::promote(&self.engine, &caller, request).await)
    }

    async fn rollback_model(
        &self,
        request: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::RollbackModelResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(models::rollback(&self.engine, &caller, request).await)
    }

    async fn retrain(
        &self,
        request: Request<pb::RetrainRequest>,
    ) -> Result<Response<pb::RetrainResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(jobs::retrain(&self.engine, &caller, request).await)
    }

    async fn get_training_job(
        &self,
        request: Request<pb::GetTrainingJobRequest>,
    ) -> Result<Response<pb::GetTrainingJobResponse>, Status> {
        let (caller, request) = parts(request)?;
        let job = jobs::get(&self.engine, &caller, request).await;
        respond(job.map(|j| pb::GetTrainingJobResponse { job: Some(j) }))
    }

    async fn get_training_stats(
        &self,
        request: Request<pb::GetTrainingStatsRequest>,
    ) -> Result<Response<pb::GetTrainingStatsResponse>, Status> {
        parts(request)?;
        respond(jobs::stats(&self.engine).await)
    }
}
