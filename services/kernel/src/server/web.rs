//! Routes browser grpc-web calls through the grpc-web translation and lets every other
//! request (native gRPC over HTTP/2, plain HTTP/1.1 such as `/metrics` scrapes and uploads)
//! pass untouched. tonic-web alone would answer plain HTTP/1.1 with 400.

use futures::future::BoxFuture;
use http::{Request, Response, Version};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{BoxError, Layer, Service, ServiceExt};

#[derive(Debug, Clone, Copy, Default)]
pub struct WebLayer;

impl<S: Clone> Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Web { web: GrpcWebLayer::new().layer(inner.clone()), plain: inner }
    }
}

#[derive(Debug, Clone)]
pub struct Web<S> {
    web: GrpcWebService<S>,
    plain: S,
}

impl<S, B> Service<Request<Body>> for Web<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    GrpcWebService<S>:
        Service<Request<Body>, Response = Response<Body>, Error = S::Error> + Clone + Send + 'static,
    <GrpcWebService<S> as Service<Request<Body>>>::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    // Readiness is checked by `oneshot` on the branch that takes the request, so a request
    // never holds capacity in both.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let is_grpc_web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc-web"));
        let is_preflight = request.method() == http::Method::OPTIONS;
        if is_grpc_web || is_preflight || request.version() == Version::HTTP_2 {
            Box::pin(self.web.clone().oneshot(request))
        } else {
            let plain = self.plain.clone();
            Box::pin(async move { plain.oneshot(request).await.map(|response| response.map(Body::new)) })
        }
    }
}
