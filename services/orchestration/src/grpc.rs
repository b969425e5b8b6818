//! gRPC handlers: identify the caller and delegate.

use crate::engine::Engine;
use crate::logs::{self, LogStream};
use crate::watch::{self, WatchStream};
use crate::{quota, runs_api, tasks};
use codingagent_kernel::error::respond;
use codingagent_kernel::identity::caller_and_message as parts;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::orchestration_service_server::OrchestrationService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub(crate) struct Handlers {
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl OrchestrationService for Handlers {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::create(&self.engine, &caller, request).await)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::get(&self.engine, &caller, request).await)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::list(&self.engine, &caller, request).await)
    }

    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::UpdateTaskResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::update(&self.engine, &caller, request).await)
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::delete(&self.engine, &caller, request).await)
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::cancel(&self.engine, &caller, request).await)
    }

    async fn retry_task(
        &self,
        request: Request<pb::RetryTaskRequest>,
    ) -> Result<Response<pb::RetryTaskResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(tasks::retry(&self.engine, &caller, request).await)
    }

    type StreamTaskLogsStream = LogStream;

    async fn stream_task_logs(
        &self,
        request: Request<pb::StreamTaskLogsRequest>,
    ) -> Result<Response<Self::StreamTaskLogsStream>, Status> {
        let (caller, request) = parts(request)?;
        respond(logs::stream(self.engine.clone(), &caller, request).await)
    }

    type WatchTasksStream = WatchStream;

    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let (caller, request) = parts(request)?;
        respond(watch::open(self.engine.clone(), &caller, request).await)
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(runs_api::list(&self.engine, &caller, request).await)
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(runs_api::get(&self.engine, &caller, request).await)
    }

    async fn get_task_diff(
        &self,
        request: Request<pb::GetTaskDiffRequest>,
    ) -> Result<Response<pb::GetTaskDiffResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(runs_api::diff(&self.engine, &caller, request).await)
    }

    async fn get_user_quota(
        &self,
        request: Request<pb::GetUserQuotaRequest>,
    ) -> Result<Response<pb::GetUserQuotaResponse>, Status> {
        let (caller, _) = parts(request)?;
        respond(quota::get(&self.engine, &caller).await)
    }

    async fn search_task_logs(
        &self,
        request: Request<pb::SearchTaskLogsRequest>,
    ) -> Result<Response<pb::SearchTaskLogsResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(logs::search(&self.engine, &caller, request).await)
    }
}
