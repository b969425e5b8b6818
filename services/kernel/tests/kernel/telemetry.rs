//! Traces leave the process over OTLP when an endpoint is configured.

use codingagent_kernel::config::TelemetryConfig;
use codingagent_kernel::telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// A stand-in OpenTelemetry collector that keeps (service name, span name) pairs.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    self.spans.lock().unwrap().push((service.clone(), span.name));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_configured() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let config =
        TelemetryConfig { otlp_endpoint: Some(format!("http://{addr}")), ..TelemetryConfig::default() };
    let guard = telemetry::init("kernel-otlp-test", &config).unwrap();
    tracing::info_span!("otlp-probe").in_scope(|| tracing::info!("inside the probe span"));
    // Dropping the guard flushes; it blocks, so not on a runtime thread.
    tokio::task::spawn_blocking(move || drop(guard)).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = collector.spans.lock().unwrap().clone();
        if spans.contains(&("kernel-otlp-test".to_owned(), "otlp-probe".to_owned())) {
            break;
        }
        assert!(Instant::now() < deadline, "collector saw {spans:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
